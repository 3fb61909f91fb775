"""prefect.yaml: every deployment points at a real flow that accepts its parameters and schedule; nothing in it
is machine-specific or switched on by default; a missing setting fails loudly, in one line naming it."""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CONFIGURATION = {"EML_DATASET": "cub:/data/CUB_200_2011", "EML_MODELS": "/srv/eml/models",
                       "EML_RESULTS": "s3://eml-results/nightly", "EML_STUDY": "/srv/eml/studies/pilot",
                       "EML_CROSSVIEW_DATASET": "cvusa:/data/CVUSA", "EML_DASK_SCHEDULER": "tcp://127.0.0.1:8786",
                       "EML_GALLERY": "market1501:/data/Market-1501-v15.09.15",
                       "EML_RETRIEVAL_QUERIES": "/data/queries/regions.csv", "EML_COMPOSITES": "/data/composites"}


def _spec() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _deployed(deployment: dict, environment: dict) -> dict:
    """What `prefect deploy` makes of a deployment's fields: Prefect's own templating, from ``environment``
    (unset variables stay as written, as `prefect deploy` leaves them)."""
    from prefect.utilities.templating import apply_values

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)
    try:
        return apply_values(deployment, os.environ, remove_notset=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _flow(deployment: dict):
    path, _, name = deployment["entrypoint"].partition(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_deployments_resolve_and_validate():
    from datetime import timedelta

    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    spec = _spec()
    names = {d["name"] for d in spec["deployments"]}
    assert "nightly-localization" in names
    for deployment in spec["deployments"]:
        deployed = _deployed(deployment, LOCAL_CONFIGURATION)
        _flow(deployed).validate_parameters(deployed.get("parameters", {}))  # raises on unknown/mistyped ones
        for schedule in deployment.get("schedules", []):
            if "cron" in schedule:
                CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
            else:
                IntervalSchedule(interval=timedelta(seconds=schedule["interval"]))
        assert deployment["work_pool"]["name"]
    collect = next(d for d in spec["deployments"] if d["name"] == "collect-study")
    assert collect["schedules"][0]["interval"] > 0
    nightly = _deployed(next(d for d in spec["deployments"] if d["name"] == "nightly-localization"),
                        LOCAL_CONFIGURATION)
    assert nightly["parameters"]["config"]["model"] == "/srv/eml/models/current.pt"  # what `eml promote` sets
    assert nightly["parameters"]["config"]["out"] == "s3://eml-results/nightly"


def test_nothing_is_scheduled_or_machine_specific_by_default():
    text = (ROOT / "prefect.yaml").read_text()
    for deployment in _spec()["deployments"]:
        for schedule in deployment.get("schedules", []):
            assert schedule["active"] is False, deployment["name"]
    assert "/data/" not in text.replace("cub:/data/CUB_200_2011)", "") and "/models/" not in text


def test_a_deployment_deployed_without_its_configuration_names_the_missing_variable():
    from prefect.exceptions import ParameterTypeError

    nightly = _deployed(next(d for d in _spec()["deployments"] if d["name"] == "nightly-localization"), {})
    assert nightly["parameters"]["config"]["dataset"] == "{{ $EML_DATASET }}"  # `prefect deploy` left it as is
    with pytest.raises(ParameterTypeError) as refused:
        _flow(nightly).validate_parameters(nightly["parameters"])
    assert "set EML_DATASET where `prefect deploy` runs" in str(refused.value)


def test_the_pull_step_fails_in_one_line_naming_eml_home(prefect_harness, tmp_path, monkeypatch, capsys):
    """Through Prefect's own step runner, as a worker runs the pull section of prefect.yaml."""
    from prefect.deployments.steps.core import StepExecutionError, run_steps

    from flows.deployment_steps import DeploymentSetupError

    pull = _spec()["pull"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EML_HOME", raising=False)
    with pytest.raises(StepExecutionError) as failed:
        asyncio.run(run_steps(pull, print_function=lambda *a, **k: None))
    cause = failed.value.__cause__
    assert isinstance(cause, DeploymentSetupError)
    assert str(cause).startswith("EML_HOME is not set on this worker") and "\n" not in str(cause)
    assert "eml: EML_HOME is not set on this worker" in capsys.readouterr().err

    for value, problem in ((str(tmp_path / "nowhere"), "no such folder"), (str(tmp_path), "not an eml checkout")):
        monkeypatch.setenv("EML_HOME", value)
        with pytest.raises(StepExecutionError) as failed:
            asyncio.run(run_steps(pull, print_function=lambda *a, **k: None))
        assert problem in str(failed.value.__cause__) and f"EML_HOME={value}" in str(failed.value.__cause__)

    monkeypatch.setenv("EML_HOME", str(ROOT))
    outputs = asyncio.run(run_steps(pull, print_function=lambda *a, **k: None))
    assert outputs["directory"] == str(ROOT) and Path.cwd() == ROOT
