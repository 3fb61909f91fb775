"""launch_study, collect_study and analyze_study as Prefect flows (MTurk stubbed, S3 on moto)."""

from __future__ import annotations

import pandas as pd
from botocore.stub import ANY, Stubber

from amt.ledger import Ledger
from tests.amt.test_analysis import simulate
from tests.amt.test_gateway import _assignment, _client, _expect_launch_start, _good_answers


def test_launch_collect_and_analyze_flows(prefect_harness, study_copy, s3_endpoint, monkeypatch):
    import boto3

    import tasks.studies
    from flows.studies import analyze_study, collect_study, launch_study
    from tasks.configs import StudyConfig

    boto3.client("s3").create_bucket(Bucket="eml-stimuli")
    client = _client(monkeypatch)
    monkeypatch.setattr(tasks.studies, "mturk_client", lambda live=False: client)
    ledger = Ledger.load(study_copy)
    with Stubber(client) as stubber:
        _expect_launch_start(stubber)
        for index in range(len(ledger.hits)):
            stubber.add_response("create_hit_with_hit_type", {"HIT": {"HITId": f"HIT{index}" + "A" * 26}},
                                 {"HITTypeId": ANY, "MaxAssignments": 3, "LifetimeInSeconds": ANY, "Question": ANY,
                                  "RequesterAnnotation": ANY,
                                  "UniqueRequestToken": ledger.hits[index]["unique_request_token"]})
        launched = launch_study(StudyConfig(folder=str(study_copy)))
        stubber.assert_no_pending_responses()
    assert launched["created"] == len(ledger.hits)
    ledger = Ledger.load(study_copy)
    assert all(url.startswith(s3_endpoint) for url in ledger.data["stimulus_urls"].values())

    with Stubber(client) as stubber:
        stubber.add_response("list_assignments_for_hit", {"Assignments": [
            _assignment("ASSIGN-1", "WORKER1", ledger.hits[0]["hit_id"], _good_answers(ledger, 0))], "NumResults": 1})
        stubber.add_response("associate_qualification_with_worker", {}, None)
        stubber.add_response("approve_assignment", {}, {"AssignmentId": "ASSIGN-1", "RequesterFeedback": ANY})
        for _ in ledger.hits[1:]:
            stubber.add_response("list_assignments_for_hit", {"Assignments": [], "NumResults": 0})
        collected = collect_study(StudyConfig(folder=str(study_copy)))
        stubber.assert_no_pending_responses()
    assert collected["approved"] == 1 and collected["responses"] == len(ledger.items_of_hit(0))

    # analysis of a full (simulated) study in the same folder
    simulate(ledger=ledger).to_parquet(study_copy / "responses.parquet")
    result = analyze_study(StudyConfig(folder=str(study_copy)))
    assert result["summary"].iloc[0]["workers_total"] == 60
    assert (study_copy / "study_summary.png").stat().st_size > 1000
    assert len(pd.read_parquet(study_copy / "worker_patterns.parquet")) == 60
