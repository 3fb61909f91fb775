"""The `responses` table: one row per answer, from MTurk or the local lab, in one schema.

Columns: ``study_id, source`` (mturk | lab), ``hit_index, hit_id, assignment_id,
worker_hash`` (SHA-256 of the per-study salt and the worker id, 16 hex; the id
itself is never stored), ``item_id, position, is_catch, method_a, method_b``
(which method was robot A / B; null for catch trials), ``answer_raw`` (the
submitted value), ``score_a`` (-2..2, how much more reasonable A was judged),
``first_method, score_first_method`` (the answer mapped to the study's first
method: +2 = first method clearly more reasonable), ``catch_expected`` (A | B),
``catch_passed``, ``accept_time, submit_time, work_seconds``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from amt.hit_page import ANSWER_VALUES
from amt.ledger import Ledger
from eml_core.errors import EmlError
from eml_core.results import ResultsLocation
from eml_core.tables import frame


def worker_hash(salt: str, worker_id: str) -> str:
    return hashlib.sha256(f"{salt}:{worker_id}".encode()).hexdigest()[:16]


def write_study_table(folder: Path, name: str, table) -> str:
    """Write ``<folder>/<name>.parquet`` atomically with the schema ``name`` of :mod:`eml_core.tables`."""
    return ResultsLocation(folder).write_table(f"{name}.parquet", name, table)


def read_study_table(folder: Path, name: str) -> pd.DataFrame:
    """A study table (empty when absent); StudyError naming the file when it is unreadable or of another schema."""
    from amt.study import StudyError, one_line

    path = Path(folder) / f"{name}.parquet"
    if path.exists() and not path.is_file():
        raise StudyError(f"{path}: is not a file")
    if not path.is_file():
        return frame(name, [])
    try:
        return ResultsLocation(folder).read_table(f"{name}.parquet", name)
    except EmlError as error:
        raise StudyError(one_line(f"{path}: not a readable {name} table ({str(error)[:300]})")) from None


def answer_rows(ledger: Ledger, hit_index: int, answers: Mapping[str, str | None], *, source: str, assignment_id: str,
                worker_id: str, hit_id: str | None, accept_time=None,
                submit_time=None) -> tuple[list[dict], list[dict]]:
    """Rows for one submission (``answers``: field ``q<position>`` -> value) and the problems found in it."""
    items = ledger.items_of_hit(hit_index)
    first = ledger.data["study"]["methods"][0]
    rows, problems = [], []
    expected_fields = {f"q{i['position']}" for i in items}
    for unknown in sorted(set(answers) - expected_fields)[:20]:  # a hostile answer may carry thousands of fields
        problems.append(_problem("collect", assignment_id,
                                 f"answer field {unknown[:60]!r} matches no item of HIT {hit_index}"))
    worker = worker_hash(ledger.salt, worker_id)
    seconds = None
    if accept_time is not None and submit_time is not None:
        seconds = (pd.Timestamp(submit_time) - pd.Timestamp(accept_time)).total_seconds()
    for item in items:
        field = f"q{item['position']}"
        raw = answers.get(field)
        if raw not in ANSWER_VALUES:
            problems.append(_problem("collect", assignment_id,
                                     f"item {item['item_id']} ({field}): malformed or missing answer "
                                     f"{(raw if raw is None else str(raw)[:60])!r}"))
            continue
        score = int(raw)
        if item["is_catch"]:
            mapped, passed = None, (score > 0) if item["expected"] == "A" else (score < 0)
        else:
            mapped, passed = (score if item["method_a"] == first else -score), None
        rows.append({
            "study_id": ledger.study_id, "source": source, "hit_index": hit_index, "hit_id": hit_id,
            "assignment_id": assignment_id, "worker_hash": worker, "item_id": item["item_id"],
            "position": item["position"], "is_catch": item["is_catch"], "method_a": item["method_a"],
            "method_b": item["method_b"], "answer_raw": raw, "score_a": score, "first_method": first,
            "score_first_method": mapped, "catch_expected": item["expected"], "catch_passed": passed,
            "accept_time": str(accept_time) if accept_time is not None else None,
            "submit_time": str(submit_time) if submit_time is not None else None, "work_seconds": seconds,
        })
    return rows, problems


def _problem(stage: str, item: str, problem: str, severity: str = "error") -> dict:
    return {"stage": stage, "item": item, "file": None, "line": None, "problem": problem, "severity": severity}


def merge_responses(existing: pd.DataFrame, new_rows: list[dict]) -> tuple[pd.DataFrame, list[dict]]:
    """Add new rows, never duplicating (assignment, item); a worker answering an item twice keeps the first."""
    problems = []
    seen_answers = set(zip(existing["assignment_id"], existing["item_id"], strict=True))
    seen_worker_items = {(w, i): a for w, i, a in zip(existing["worker_hash"], existing["item_id"],
                                                      existing["assignment_id"], strict=True)}
    kept = []
    for row in new_rows:
        if (row["assignment_id"], row["item_id"]) in seen_answers:
            continue
        earlier = seen_worker_items.get((row["worker_hash"], row["item_id"]))
        if earlier is not None and earlier != row["assignment_id"]:
            problems.append(_problem("collect", row["assignment_id"],
                                     f"worker {row['worker_hash']} already answered item {row['item_id']} in "
                                     f"assignment {earlier}; the later answer is not counted", "warning"))
            continue
        seen_answers.add((row["assignment_id"], row["item_id"]))
        seen_worker_items[(row["worker_hash"], row["item_id"])] = row["assignment_id"]
        kept.append(row)
    if not kept:
        return existing, problems
    return frame("responses", pd.concat([existing, frame("responses", kept)], ignore_index=True)), problems
