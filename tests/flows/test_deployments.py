"""prefect.yaml: every deployment points at a real flow that accepts its parameters and schedule."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_deployments_resolve_and_validate():
    from datetime import timedelta

    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert "nightly-localization" in names
    for deployment in spec["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        flow.validate_parameters(deployment.get("parameters", {}))  # raises on unknown or mistyped parameters
        for schedule in deployment.get("schedules", []):
            if "cron" in schedule:
                CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
            else:
                IntervalSchedule(interval=timedelta(seconds=schedule["interval"]))
        assert deployment["work_pool"]["name"]
    collect = next(d for d in spec["deployments"] if d["name"] == "collect-study")
    assert collect["schedules"][0]["interval"] > 0
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly-localization")
    assert {"dataset", "model", "out"} <= set(nightly["parameters"]["config"])
