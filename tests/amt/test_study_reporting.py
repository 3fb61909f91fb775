"""Studies report like flows: `eml study analyze` publishes the deployment's artifacts (and records the analysis in
a run catalog), pilots can keep flagged answers, a launch can be dry-run, missing AWS credentials are one line,
lab answers record the time spent, the lab server has a status page and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import requests

from amt.ledger import Ledger
from flows.cli import main
from tests.amt.helpers import make_ledger
from tests.hostile.harness import run_cli

EML = [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main())"]


def _artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    return found[0] if found else None


def test_analyze_publishes_artifacts_records_the_catalog_and_pilots_keep_flagged_answers(prefect_harness, tmp_path,
                                                                                        capsys):
    from tasks.runs import read_catalog
    from tests.dashboard.synthetic import launched_study

    folder = launched_study(tmp_path / "study")
    root = tmp_path / "results"
    assert main(["study", "analyze", str(folder), "--results", str(root)]) == 0
    out = capsys.readouterr().out
    assert "decomposition vs gradcam" in out and "recorded as run" in out

    report = _artifact("study-fake-study-report")
    assert report.type == "markdown" and re.search(r"\(data:image/png;base64,[A-Za-z0-9+/=]{1000,}\)", report.data)
    assert "| assignments submitted | 120 of 120 |" in report.data and "| approved / held / rejected | 118 / 2 / 0 |" \
        in report.data
    assert "**2 assignments are held for review**" in report.data and "Committed $" in report.data
    answers = _artifact("study-fake-study-answers")
    assert answers.type == "table" and len(pd.read_json(__import__("io").StringIO(answers.data))) == 6

    catalog = read_catalog(str(root))
    assert list(catalog["kind"]) == ["study"] and list(catalog["dataset"]) == ["fake-study"]
    run = catalog.iloc[0]
    assert '"assignments_held": 2' in run["headline"]
    assert (root / "study" / run["run_id"] / "study_summary.parquet").is_file()
    trusted = pd.read_parquet(folder / "study_summary.parquet").iloc[0]
    assert trusted["workers"] < trusted["workers_total"]  # flagged workers left out by default

    assert main(["study", "analyze", str(folder), "--include-flagged"]) == 0
    assert "pilot analysis" in capsys.readouterr().out
    pilot = pd.read_parquet(folder / "study_summary.parquet").iloc[0]
    assert pilot["workers"] == pilot["workers_total"] == 60 and pilot["answers_excluded"] == 0
    assert "flagged workers' and held assignments' answers are INCLUDED" in _artifact("study-fake-study-report").data


@pytest.fixture
def no_aws(monkeypatch):
    """No credentials anywhere boto3 looks, and any AWS client creation fails the test."""
    import boto3

    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "client", lambda *a, **k: pytest.fail("an AWS client was created"))


def test_launch_dry_run_prints_cost_hits_and_qualifications_and_calls_nothing(tmp_path, no_aws, capsys):
    folder = make_ledger(tmp_path / "study", budget_usd=20.0)
    assert main(["study", "launch", str(folder), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing was sent to MTurk or S3 (sandbox" in out
    assert "2 HITs (2 still to create) x 3 assignments" in out and "= $3.60; budget cap $20.00" in out
    for line in ("approval rate (%) GreaterThanOrEqualTo 95", "approved HITs GreaterThanOrEqualTo 500", "locale In US",
                 "DoesNotExist"):
        assert line in out
    assert Ledger.load(folder).data["launches"] == []
    assert main(["study", "launch", str(folder), "--dry-run", "--live"]) == 0
    assert "(LIVE: https://mturk-requester.us-east-1.amazonaws.com)" in capsys.readouterr().out
    uncapped = make_ledger(tmp_path / "uncapped")
    result = run_cli(["study", "launch", str(uncapped), "--dry-run", "--live"], entry_point="eml study launch",
                     case="--dry-run --live without a budget cap")
    assert "needs a positive budget_usd cap" in result.err


def test_missing_aws_credentials_are_one_line(tmp_path, no_aws):
    folder = make_ledger(tmp_path / "study", budget_usd=20.0)
    for argv in (["study", "launch", str(folder)], ["study", "collect", str(folder)],
                 ["study", "expire", str(folder)], ["study", "reject", str(folder), "ASSIGN1", "--reason", "Failed."]):
        result = run_cli(argv, entry_point=f"eml study {argv[1]}", case="no AWS credentials")
        assert "no AWS credentials found" in result.err and "nothing was sent" in result.err
    assert Ledger.load(folder).data["launches"] == []


def test_lab_answers_record_time_spent_and_the_status_page_shows_progress(study_copy):
    from amt.lab import LabServer

    server = LabServer(study_copy).start()
    try:
        (link,) = server.add_participants(1)
        token = link.rsplit("/", 1)[1]
        page = requests.get(link, timeout=10)
        assert page.status_code == 200
        time.sleep(0.3)
        items = Ledger.load(study_copy).items_of_hit(0)
        posted = requests.post(f"{link}/hit/0", data={f"q{i['position']}": "1" for i in items}, timeout=10,
                               allow_redirects=False)
        assert posted.status_code == 303
        status = requests.get(server.status_url, timeout=10)
        assert status.status_code == 200 and token not in status.text
        assert "0 of 1 participants done" in status.text and "<td>1</td>" in status.text  # one page answered
        assert requests.get(f"{server.address}/status/{'x' * 24}", timeout=10).status_code == 403
    finally:
        server.stop()
    responses = pd.read_parquet(study_copy / "responses.parquet")
    assert len(responses) == len(items) and (responses["work_seconds"] >= 0.3).all()
    assert responses["accept_time"].notna().all() and responses["submit_time"].notna().all()


def test_serve_stops_cleanly_on_sigterm(study_copy):
    process = subprocess.Popen([*EML, "study", "serve", str(study_copy), "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = []
        while not any("SIGTERM to stop" in line for line in lines):
            line = process.stdout.readline()
            assert line, f"serve ended early: {process.stderr.read()}"
            lines.append(line)
        status_url = next(line.split(": ", 1)[1].strip() for line in lines if line.startswith("status page: "))
        assert requests.get(status_url, timeout=10).status_code == 200
        port = int(status_url.split(":")[2].split("/")[0])
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "lab server stopped" in out and "Traceback" not in err
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
