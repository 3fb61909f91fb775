"""`eml study collect`: assignments from MTurk into the `responses` table, reviewed by catch trials.

Assignments are paged per HIT; answers parsed from MTurk's QuestionFormAnswers
XML (crowd-form's ``taskAnswers`` JSON or plain fields); workers who pass every
catch trial of an assignment are approved, the others are held for review
(listed in the ledger; :func:`reject` needs a reason). Collecting twice never
duplicates a row, malformed answers and unknown assignments land in the
study's ``errors.parquet``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pandas as pd

from amt.ledger import Ledger
from amt.responses import _problem, answer_rows, merge_responses, read_study_table, worker_hash, write_study_table
from amt.study import StudyError
from eml_core.tables import frame

RESPONSES_FILE = "responses.parquet"
ERRORS_FILE = "errors.parquet"


def parse_answer_xml(xml_text: str) -> dict[str, str | None]:
    """``{field: value}`` from a QuestionFormAnswers document; raises ValueError when unreadable."""
    root = ElementTree.fromstring(xml_text)
    answers: dict[str, str | None] = {}
    for answer in root.iter():
        if not answer.tag.endswith("Answer") or answer.tag.endswith("QuestionFormAnswers"):
            continue
        identifier = next((c.text for c in answer if c.tag.endswith("QuestionIdentifier")), None)
        text = next((c.text for c in answer if c.tag.endswith("FreeText")), None)
        if identifier is None:
            continue
        if identifier == "taskAnswers":
            payload = json.loads(text or "[]")
            for entry in payload if isinstance(payload, list) else [payload]:
                for key, value in entry.items():
                    answers[key] = _radio_value(value)
        else:
            answers[identifier] = text
    return answers


def _radio_value(value):
    """crowd-form reports a radio group as its value, or as ``{value: true, ...}``."""
    if isinstance(value, dict):
        chosen = [k for k, v in value.items() if v is True]
        return chosen[0] if len(chosen) == 1 else json.dumps(value)
    return None if value is None else str(value)


def _assignments(client, hit_id: str):
    """Every submitted, approved or rejected assignment of a HIT (boto3's paginator follows NextToken)."""
    pages = client.get_paginator("list_assignments_for_hit").paginate(
        HITId=hit_id, AssignmentStatuses=["Submitted", "Approved", "Rejected"], PaginationConfig={"PageSize": 100})
    for page in pages:
        yield from page.get("Assignments", [])


def collect(client, folder: str | Path, approve: bool = True, log=print) -> dict:
    """Fetch, record, approve or hold every new assignment. Holds the study lock throughout: a ``reject``,
    a lab submission or another collect waits, then sees everything this one wrote (and the reverse)."""
    with Ledger.update(folder) as ledger:
        return _collect(client, ledger, approve, log)


def _collect(client, ledger: Ledger, approve: bool, log) -> dict:
    folder = ledger.folder
    responses = read_study_table(folder, "responses")
    errors = read_study_table(folder, "errors")
    known_errors = set(zip(errors["item"], errors["problem"], strict=True))
    new_problems: list[dict] = []
    review = ledger.data.setdefault("review", {})
    approved = held = added = 0
    launch = next((record for record in ledger.data.get("launches", []) if record.get("participated_qualification")),
                  None)
    for hit in ledger.hits:
        if not hit.get("hit_id"):
            continue
        for assignment in _assignments(client, hit["hit_id"]):
            assignment_id = assignment["AssignmentId"]
            if assignment.get("HITId") not in (None, hit["hit_id"]):
                new_problems.append(_problem("collect", assignment_id,
                                             f"assignment belongs to unknown HIT {assignment.get('HITId')}"))
                continue
            rows: list[dict]
            problems: list[dict]
            try:
                answers = parse_answer_xml(assignment.get("Answer", ""))
            except (ElementTree.ParseError, ValueError, AttributeError, TypeError, RecursionError) as error:
                # held for review like any malformed answer: left alone, MTurk would auto-approve it
                rows, problems = [], [_problem("collect", assignment_id,
                                               f"unreadable answer document ({str(error)[:200]})")]
            else:
                rows, problems = answer_rows(ledger, hit["index"], answers, source="mturk",
                                             assignment_id=assignment_id, worker_id=assignment["WorkerId"],
                                             hit_id=hit["hit_id"], accept_time=assignment.get("AcceptTime"),
                                             submit_time=assignment.get("SubmitTime"))
            new_problems += problems
            before = len(responses)
            responses, duplicates = merge_responses(responses, rows)
            new_problems += duplicates
            added += len(responses) - before
            # every participant is excluded from later studies, whatever became of this assignment
            qualified = ledger.data.setdefault("qualified_workers", [])  # salted hashes, as in responses
            hashed = worker_hash(ledger.salt, assignment["WorkerId"])
            if launch and hashed not in qualified:
                client.associate_qualification_with_worker(QualificationTypeId=launch["participated_qualification"],
                                                           WorkerId=assignment["WorkerId"], IntegerValue=1,
                                                           SendNotification=False)
                qualified.append(hashed)
                ledger.save()
            if assignment.get("AssignmentStatus") != "Submitted" or not approve:
                continue
            catch = [r for r in rows if r["is_catch"]]
            if all(r["catch_passed"] for r in catch) and not problems:
                client.approve_assignment(AssignmentId=assignment_id,
                                          RequesterFeedback="Thank you for your careful answers.")
                approved += 1
                review.pop(assignment_id, None)
            else:
                failed = sum(not r["catch_passed"] for r in catch)
                review[assignment_id] = {"hit_id": hit["hit_id"], "reason": f"{failed} of {len(catch)} catch trials "
                                         f"failed, {len(problems)} malformed answers"}
                held += 1
            ledger.save()
    fresh = [p for p in new_problems if (p["item"], p["problem"]) not in known_errors]
    errors = frame("errors", pd.concat([errors, frame("errors", fresh)], ignore_index=True)) if fresh else errors
    write_study_table(folder, "responses", responses)
    write_study_table(folder, "errors", errors)
    ledger.save()
    summary = {"responses": len(responses), "added": added, "approved": approved, "held_for_review": held,
               "errors": len(fresh), "workers": responses["worker_hash"].nunique()}
    log(f"collected {ledger.study_id}: {summary}")
    return summary


ASSIGNMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_FEEDBACK = 1024  # MTurk's limit on RequesterFeedback


def check_rejection(assignment_id: str, reason: str) -> str:
    """The reason to send (stripped); StudyError for an id that is not an MTurk assignment id or a reason that
    is blank or over MTurk's 1024 characters. Checked before any AWS client exists."""
    if not isinstance(assignment_id, str) or not ASSIGNMENT_ID.match(assignment_id):
        raise StudyError(f"reject: {str(assignment_id)[:80]!r} is not an MTurk assignment id "
                         f"(letters, digits, '-' and '_', at most 64)")
    if not isinstance(reason, str) or not reason.strip():
        raise StudyError("reject: a reason for the worker is required")
    if len(reason.strip()) > MAX_FEEDBACK:
        raise StudyError(f"reject: the reason is {len(reason.strip())} characters; MTurk takes at most {MAX_FEEDBACK}")
    return reason.strip()


def reject(client, folder: str | Path, assignment_id: str, reason: str) -> None:
    """Reject an assignment; MTurk shows the worker the reason, so one is required (at most 1024 characters).
    Under the study lock: a collect running meanwhile finishes first, and neither loses the other's update."""
    reason = check_rejection(assignment_id, reason)
    with Ledger.update(folder) as ledger:
        client.reject_assignment(AssignmentId=assignment_id, RequesterFeedback=reason)
        ledger.data.setdefault("review", {}).pop(assignment_id, None)
        ledger.data.setdefault("rejected", {})[assignment_id] = reason


def approve_held(client, folder: str | Path, assignment_id: str, feedback: str = "Thank you for your answers.") -> None:
    """Approve an assignment held for review (the reviewer read its answers and found them fine); it leaves the
    review list, so the analysis counts it. Under the study lock, like :func:`reject`."""
    if not isinstance(assignment_id, str) or not ASSIGNMENT_ID.match(assignment_id):
        raise StudyError(f"approve: {str(assignment_id)[:80]!r} is not an MTurk assignment id")
    with Ledger.update(folder) as ledger:
        if assignment_id not in ledger.data.get("review", {}):
            raise StudyError(f"approve: assignment {assignment_id} is not held for review in {ledger.folder}")
        client.approve_assignment(AssignmentId=assignment_id, RequesterFeedback=feedback[:MAX_FEEDBACK],
                                  OverrideRejection=False)
        ledger.data["review"].pop(assignment_id)
