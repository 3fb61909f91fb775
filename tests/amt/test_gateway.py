"""The MTurk gateway and collection against botocore's Stubber on a real `mturk` client."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest
from botocore.stub import ANY, Stubber

from amt.collect import collect, parse_answer_xml, reject
from amt.gateway import LIVE_ENDPOINT, SANDBOX_ENDPOINT, BudgetError, Gateway, cost_estimate, fee_rate, mturk_client
from amt.ledger import Ledger
from amt.study import StudyError

URL = lambda name: f"https://eml-stimuli.s3.amazonaws.com/studies/test-overall/{name}"  # noqa: E731


def _client(monkeypatch, live=False):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return mturk_client(live)


def _study(ledger):
    return ledger.study_definition()


def test_sandbox_is_the_default_endpoint_and_live_needs_the_flag(monkeypatch):
    assert _client(monkeypatch).meta.endpoint_url == SANDBOX_ENDPOINT
    assert _client(monkeypatch, live=True).meta.endpoint_url == LIVE_ENDPOINT


def test_cost_estimate_uses_mturk_fees(study_copy):
    study = _study(Ledger.load(study_copy))
    estimate = cost_estimate(study)  # 2 HITs x 3 assignments x $0.50, 20% fee
    assert estimate["assignments"] == 6 and estimate["total_usd"] == pytest.approx(3.6)
    assert fee_rate(9) == 0.2 and fee_rate(10) == 0.4


def _expect_launch_start(stubber, balance="10000.00"):
    stubber.add_response("get_account_balance", {"AvailableBalance": balance})
    stubber.add_response("list_qualification_types", {"NumResults": 0, "QualificationTypes": []},
                         {"Query": "eml-study-participant", "MustBeRequestable": False, "MustBeOwnedByCaller": True,
                          "MaxResults": 100})
    stubber.add_response("create_qualification_type",
                         {"QualificationType": {"QualificationTypeId": "QPARTICIPATED00000000000000000"}},
                         {"Name": "eml-study-participant", "Keywords": "eml", "Description": ANY,
                          "QualificationTypeStatus": "Active"})
    stubber.add_response("create_hit_type", {"HITTypeId": "HITTYPE000000000000000000000001"}, {
        "AutoApprovalDelayInSeconds": ANY, "AssignmentDurationInSeconds": ANY, "Reward": "0.50", "Title": ANY,
        "Keywords": ANY, "Description": ANY, "QualificationRequirements": ANY})


def _create(ledger, index, hit_id):
    return ("create_hit_with_hit_type", {"HIT": {"HITId": hit_id}}, {
        "HITTypeId": "HITTYPE000000000000000000000001", "MaxAssignments": 3, "LifetimeInSeconds": ANY,
        "Question": ANY, "RequesterAnnotation": ledger.hits[index]["annotation"],
        "UniqueRequestToken": ledger.hits[index]["unique_request_token"]})


def test_launch_creates_a_hit_type_and_every_hit(study_copy, monkeypatch):
    client = _client(monkeypatch)
    ledger = Ledger.load(study_copy)
    with Stubber(client) as stubber:
        _expect_launch_start(stubber)
        for index, hit_id in enumerate(["HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA", "HIT1AAAAAAAAAAAAAAAAAAAAAAAAAA"]):
            stubber.add_response(*_create(ledger, index, hit_id))
        result = Gateway(client, log=lambda *_: None).launch(study_copy, URL)
        stubber.assert_no_pending_responses()
    assert result["created"] == 2 and not result["live"]
    saved = Ledger.load(study_copy)
    assert [h["hit_id"] for h in saved.hits] == ["HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA", "HIT1AAAAAAAAAAAAAAAAAAAAAAAAAA"]
    requirements = client.meta  # the requirements were validated against the service model by the client
    assert requirements is not None


def test_crashed_launch_resumes_without_duplicates(study_copy, monkeypatch):
    client = _client(monkeypatch)
    ledger = Ledger.load(study_copy)
    with Stubber(client) as stubber:
        _expect_launch_start(stubber)
        stubber.add_response(*_create(ledger, 0, "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA"))
        stubber.add_client_error("create_hit_with_hit_type", service_error_code="ServiceFault",
                                 service_message="connection reset", http_status_code=500)
        with pytest.raises(Exception, match="connection reset"):
            Gateway(client, log=lambda *_: None).launch(study_copy, URL)
    ledger = Ledger.load(study_copy)
    assert ledger.hits[0]["hit_id"] and not ledger.hits[1]["hit_id"]
    # the second HIT had in fact been created before the connection broke: MTurk answers the same token with
    # an error naming it; the relaunch records that HIT and creates nothing twice
    with Stubber(client) as stubber:
        stubber.add_response("list_hits", {"HITs": [], "NumResults": 0}, {"MaxResults": 100})
        stubber.add_response("get_account_balance", {"AvailableBalance": "10000.00"})
        stubber.add_client_error("create_hit_with_hit_type", service_error_code="RequestError",
                                 service_message="AWS.MechanicalTurk.HitAlreadyExists: The HIT "
                                                 "HIT1BBBBBBBBBBBBBBBBBBBBBBBBBB already exists for this token",
                                 expected_params=_create(ledger, 1, "")[2])
        result = Gateway(client, log=lambda *_: None).launch(study_copy, URL)
        stubber.assert_no_pending_responses()
    assert result["created"] == 0
    assert [h["hit_id"] for h in Ledger.load(study_copy).hits] == ["HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA",
                                                                   "HIT1BBBBBBBBBBBBBBBBBBBBBBBBBB"]


def test_resume_finds_hits_by_annotation_after_mturk_forgot_the_token(study_copy, monkeypatch):
    client = _client(monkeypatch)
    with Ledger.update(study_copy) as ledger:
        ledger.data["launches"] = [{"live": False, "hit_type_id": "HITTYPE000000000000000000000001",
                                    "participated_qualification": None}]
        ledger.hits[0]["hit_id"] = "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA"
    with Stubber(client) as stubber:
        stubber.add_response("list_hits", {"HITs": [{"HITId": "OTHERAAAAAAAAAAAAAAAAAAAAAAAAA",
                                                     "RequesterAnnotation": "another-study:x:1"}],
                                           "NextToken": "more", "NumResults": 1})
        stubber.add_response("list_hits", {"HITs": [{"HITId": "HIT1CCCCCCCCCCCCCCCCCCCCCCCCCC",
                                                     "RequesterAnnotation": ledger.hits[1]["annotation"]}],
                                           "NumResults": 1}, {"NextToken": "more", "MaxResults": 100})
        stubber.add_response("get_account_balance", {"AvailableBalance": "10000.00"})  # for what is still missing
        result = Gateway(client, log=lambda *_: None).launch(study_copy, URL)
        stubber.assert_no_pending_responses()  # found, so never created again
    assert result["created"] == 0 and Ledger.load(study_copy).hits[1]["hit_id"] == "HIT1CCCCCCCCCCCCCCCCCCCCCCCCCC"


def test_a_sandbox_study_cannot_go_live_and_rebuilds_get_new_tokens(study_copy, built_study, monkeypatch):
    from amt.gateway import StudyModeError, study_mode

    with Ledger.update(study_copy) as ledger:
        ledger.data["launches"] = [{"live": False, "hit_type_id": "T", "participated_qualification": None}]
        ledger.data["study"]["budget_usd"] = 50.0
    with pytest.raises(StudyModeError, match="launched in the sandbox"):
        Gateway(_client(monkeypatch, live=True), live=True).launch(study_copy, URL)
    with pytest.raises(StudyModeError, match="drop --live"):
        study_mode(ledger, True)
    assert study_mode(ledger, False) is False
    # a rebuild of the same study (same id) into another folder gets other tokens and annotations
    from amt.build import build_study

    again = build_study(Ledger.load(built_study).study_definition(), study_copy.parent / "rebuilt")
    assert {h["unique_request_token"] for h in again.hits}.isdisjoint(h["unique_request_token"] for h in ledger.hits)
    assert {h["annotation"] for h in again.hits}.isdisjoint(h["annotation"] for h in ledger.hits)


def test_budget_cap_and_balance_refuse_a_launch(study_copy, monkeypatch):
    client = _client(monkeypatch)

    def cap(dollars):
        with Ledger.update(study_copy) as ledger:
            ledger.data["study"]["budget_usd"] = dollars

    cap(3.0)  # the estimate is $3.60
    with Stubber(client) as stubber:
        with pytest.raises(BudgetError, match=r"estimated cost \$3.60 .* exceeds the budget cap \$3.00"):
            Gateway(client).launch(study_copy, URL)
        stubber.assert_no_pending_responses()  # refused before any call
    cap(0.0)
    with pytest.raises(BudgetError, match="live launch needs a positive budget_usd cap"):
        Gateway(_client(monkeypatch, live=True), live=True).launch(study_copy, URL)
    cap(50.0)
    with Stubber(client) as stubber:
        stubber.add_response("get_account_balance", {"AvailableBalance": "1.00"})
        with pytest.raises(BudgetError, match=r"exceeds the account balance \$1.00"):
            Gateway(client).launch(study_copy, URL)
    assert not any(h["hit_id"] for h in Ledger.load(study_copy).hits)


def _answer_xml(answers: dict) -> str:
    payload = json.dumps([answers])
    return ('<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="http://mechanicalturk.amazonaws.com/'
            'AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"><Answer><QuestionIdentifier>'
            f'taskAnswers</QuestionIdentifier><FreeText>{payload}</FreeText></Answer></QuestionFormAnswers>')


def _good_answers(ledger, index, flip=False):
    """Pass every catch trial; prefer robot A (or B) elsewhere."""
    answers = {}
    for item in ledger.items_of_hit(index):
        if item["is_catch"]:
            answers[f"q{item['position']}"] = "2" if item["expected"] == "A" else "-2"
        else:
            answers[f"q{item['position']}"] = "-1" if flip else "1"
    return answers


def _assignment(assignment_id, worker, hit_id, answers, status="Submitted"):
    when = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    return {"AssignmentId": assignment_id, "WorkerId": worker, "HITId": hit_id, "AssignmentStatus": status,
            "AcceptTime": when, "SubmitTime": when.replace(minute=3),
            "Answer": answers if isinstance(answers, str) else _answer_xml(answers)}


def test_parse_answer_formats():
    assert parse_answer_xml(_answer_xml({"q0": "2", "q1": {"-1": True, "0": False}})) == {"q0": "2", "q1": "-1"}
    plain = ('<QuestionFormAnswers><Answer><QuestionIdentifier>q0</QuestionIdentifier><FreeText>0</FreeText>'
             '</Answer></QuestionFormAnswers>')
    assert parse_answer_xml(plain) == {"q0": "0"}


def test_collect_approves_holds_records_problems_and_never_duplicates(study_copy, monkeypatch):
    client = _client(monkeypatch)
    with Ledger.update(study_copy) as ledger:
        ledger.hits[0].update(hit_id="HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA")
        ledger.hits[1].update(hit_id="HIT1AAAAAAAAAAAAAAAAAAAAAAAAAA")
        ledger.data["launches"] = [{"live": False, "hit_type_id": "HITTYPE000000000000000000000001",
                                    "participated_qualification": "QPARTICIPATED00000000000000000"}]
    failing = _good_answers(ledger, 0)
    catch = next(i for i in ledger.items_of_hit(0) if i["is_catch"])
    failing[f"q{catch['position']}"] = "-2" if catch["expected"] == "A" else "2"
    malformed = dict(_good_answers(ledger, 1), q0="maybe", q9="2")
    hit0 = [_assignment("ASSIGN-GOOD-0", "WORKER1", "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA", _good_answers(ledger, 0)),
            _assignment("ASSIGN-FAIL-0", "WORKER2", "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA", failing),
            _assignment("ASSIGN-TWICE-0", "WORKER1", "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA",
                        _good_answers(ledger, 0, flip=True)),
            _assignment("ASSIGN-STRAY", "WORKER3", "HITOTHERAAAAAAAAAAAAAAAAAAAAAA", _good_answers(ledger, 0))]
    hit1 = [_assignment("ASSIGN-BAD-1", "WORKER3", "HIT1AAAAAAAAAAAAAAAAAAAAAAAAAA", malformed),
            _assignment("ASSIGN-XML-1", "WORKER4", "HIT1AAAAAAAAAAAAAAAAAAAAAAAAAA", "<not xml")]
    qualify = ("associate_qualification_with_worker", {}, {
        "QualificationTypeId": "QPARTICIPATED00000000000000000", "WorkerId": ANY, "IntegerValue": 1,
        "SendNotification": False})
    with Stubber(client) as stubber:
        # HIT 0's assignments come in two pages; each submitted assignment is approved or held as it is read,
        # and each worker gets the participation qualification once
        stubber.add_response("list_assignments_for_hit", {"Assignments": hit0[:2], "NextToken": "page2",
                                                          "NumResults": 2})
        stubber.add_response(*qualify)  # WORKER1
        stubber.add_response("approve_assignment", {}, {"AssignmentId": "ASSIGN-GOOD-0", "RequesterFeedback": ANY})
        stubber.add_response(*qualify)  # WORKER2, then held: failed a catch trial
        stubber.add_response("list_assignments_for_hit", {"Assignments": hit0[2:], "NumResults": 2},
                             {"HITId": "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA", "MaxResults": 100, "NextToken": "page2",
                              "AssignmentStatuses": ["Submitted", "Approved", "Rejected"]})
        stubber.add_response("approve_assignment", {}, {"AssignmentId": "ASSIGN-TWICE-0", "RequesterFeedback": ANY})
        stubber.add_response("list_assignments_for_hit", {"Assignments": hit1, "NumResults": 2})
        stubber.add_response(*qualify)  # WORKER3, then held: malformed answers
        stubber.add_response(*qualify)  # WORKER4, then held: an unreadable answer document (never auto-approved)
        first = collect(client, study_copy, log=lambda *_: None)
        stubber.assert_no_pending_responses()
    responses = pd.read_parquet(study_copy / "responses.parquet")
    errors = pd.read_parquet(study_copy / "errors.parquet")
    assert first["approved"] == 2 and first["held_for_review"] == 3
    assert set(Ledger.load(study_copy).data["review"]) == {"ASSIGN-FAIL-0", "ASSIGN-BAD-1", "ASSIGN-XML-1"}
    assert not responses["assignment_id"].eq("ASSIGN-TWICE-0").any()  # the worker's second answers don't count
    problems = " | ".join(errors["problem"])
    assert "already answered item" in problems and "unknown HIT HITOTHER" in problems
    assert "malformed or missing answer 'maybe'" in problems and "'q9' matches no item" in problems
    assert "unreadable answer document" in problems
    assert not responses["worker_hash"].isin(["WORKER1", "WORKER2", "WORKER3"]).any()  # ids only as salted hashes
    assert responses["worker_hash"].str.fullmatch(r"[0-9a-f]{16}").all()
    real = responses[~responses["is_catch"]]
    first_method = real["first_method"].iloc[0]
    assert ((real["method_a"] == first_method) == (real["score_first_method"] == real["score_a"])).all()

    # collecting again: the same assignments, now approved -> no new rows, no calls but the listings
    approved = [dict(a, AssignmentStatus="Approved") for a in hit0]
    with Stubber(client) as stubber:
        stubber.add_response("list_assignments_for_hit", {"Assignments": approved, "NumResults": 4})
        stubber.add_response("list_assignments_for_hit", {"Assignments": [], "NumResults": 0})
        again = collect(client, study_copy, log=lambda *_: None)
        stubber.assert_no_pending_responses()
    assert again["added"] == 0 and len(pd.read_parquet(study_copy / "responses.parquet")) == len(responses)
    assert len(pd.read_parquet(study_copy / "errors.parquet")) == len(errors)


def test_reject_needs_a_reason_and_expire(study_copy, monkeypatch):
    client = _client(monkeypatch)
    with pytest.raises(StudyError, match="reason"):
        reject(client, study_copy, "ASSIGN-1", "  ")
    with Stubber(client) as stubber:
        stubber.add_response("reject_assignment", {}, {"AssignmentId": "ASSIGN-1",
                                                       "RequesterFeedback": "Failed the attention checks."})
        reject(client, study_copy, "ASSIGN-1", "Failed the attention checks.")
    with Ledger.update(study_copy) as ledger:
        ledger.hits[0]["hit_id"] = "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA"
    with Stubber(client) as stubber:
        stubber.add_response("update_expiration_for_hit", {}, {"HITId": "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA",
                                                                "ExpireAt": datetime(2015, 1, 1)})
        stubber.add_response("delete_hit", {}, {"HITId": "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA"})
        gateway = Gateway(client)
        assert gateway.expire(study_copy) == 1 and gateway.delete(study_copy) == 1
    assert Ledger.load(study_copy).hits[0]["status"] == "deleted"
