"""Where a study stands: progress, spend against the budget, per-item answers, lab participants, held work.

Read-only views of a study folder (ledger and tables), shared by ``eml study analyze``'s report, the lab
server's status page and the review dashboard. Nothing here writes or talks to AWS.

**Counting assignments.** MTurk assignments are what collection saw: an assignment is *submitted* once its
answers (or its unreadable answer document) reached the folder; it is *held* while it sits in the ledger's
``review`` list (failed a catch trial or malformed: left alone, MTurk would auto-approve it after the HIT
type's delay), *rejected* once ``eml study reject`` sent a reason, and *approved* otherwise (collection
approves what passes). Lab answers are counted per participant and never paid.

**Spend**, in integer cents (:mod:`amt.money`): *committed* is what the launched HITs can cost at most (all
their assignments, fees and budgeted bonuses included, the figure the budget cap is checked against);
*paid* is what approved assignments cost (reward + MTurk's fee; bonuses are paid by hand and not counted).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from amt.ledger import Ledger
from amt.money import cost_estimate, fee_cents, usd_text
from amt.responses import read_study_table

LAB_PREFIX = "lab-"


def lab_participant(token: str) -> str:
    """The name of a lab participant in responses and on the status page: a hash of the link's token (the
    token itself is a secret that lets anyone answer in the participant's name)."""
    return f"{LAB_PREFIX}{hashlib.sha256(token.encode()).hexdigest()[:12]}"


def assignment_counts(ledger: Ledger, responses: pd.DataFrame) -> dict:
    """MTurk assignments: expected (launched HITs x assignments per HIT), submitted, approved, held, rejected."""
    study = ledger.study_definition()
    launched = [h for h in ledger.hits if h.get("hit_id")]
    mturk = responses[responses["source"] == "mturk"]
    held, rejected = set(ledger.data.get("review", {})), set(ledger.data.get("rejected", {}))
    submitted = set(mturk["assignment_id"]) | held | rejected
    return {"hits": len(ledger.hits), "hits_launched": len(launched),
            "hits_expired": sum(h.get("status") in ("expired", "deleted") for h in ledger.hits),
            "assignments_expected": len(launched) * study.assignments_per_hit,
            "assignments_submitted": len(submitted), "assignments_held": len(held),
            "assignments_rejected": len(rejected), "assignments_approved": len(submitted - held - rejected)}


def spend(ledger: Ledger, approved_assignments: int) -> dict:
    """Committed and paid cents against the study's budget cap (0 = no cap)."""
    study = ledger.study_definition()
    launched = sum(bool(h.get("hit_id")) for h in ledger.hits)
    committed = cost_estimate(study, launched)["total_cents"] if launched else 0
    per_assignment = study.reward_cents + fee_cents(study.reward_cents, study.assignments_per_hit)
    paid = approved_assignments * per_assignment
    budget = study.budget_cents
    return {"budget_cents": budget, "committed_cents": committed, "paid_cents": paid,
            "committed_share": committed / budget if budget else None, "paid_share": paid / budget if budget else None,
            "full_study_cents": cost_estimate(study)["total_cents"], "mode": _mode(ledger)}


def _mode(ledger: Ledger) -> str:
    return {None: "not launched", True: "live", False: "sandbox"}[ledger.launched_live]


def lab_progress(ledger: Ledger, responses: pd.DataFrame) -> pd.DataFrame:
    """One row per lab participant link: pages answered of the study's pages, answers, last answer, time."""
    lab = responses[responses["source"] == "lab"]
    pages = len(ledger.hits)
    rows = []
    for token in ledger.data.get("lab_tokens", []):
        name = lab_participant(token)
        mine = lab[lab["assignment_id"].str.startswith(name + "-")]
        answered = mine["assignment_id"].nunique()
        per_page = mine.drop_duplicates("assignment_id")["work_seconds"]
        rows.append({"participant": name, "pages_answered": int(answered), "pages": pages,
                     "done": answered >= pages, "answers": len(mine),
                     "last_answer": max((t for t in mine["submit_time"] if t), default=None),
                     "seconds_spent": float(per_page.sum()) if per_page.notna().any() else None})
    return pd.DataFrame(rows, columns=["participant", "pages_answered", "pages", "done", "answers", "last_answer",
                                       "seconds_spent"])


def item_breakdown(ledger: Ledger, responses: pd.DataFrame) -> pd.DataFrame:
    """One row per item of the ledger: answers, mean score for the first method, share preferring it, and
    which method was robot A; catch trials with their pass rate."""
    rows = []
    by_item = {item_id: group for item_id, group in responses.groupby("item_id")}
    for item in ledger.items:
        answers = by_item.get(item["item_id"], responses.iloc[0:0])
        scores = answers["score_first_method"].dropna().astype(float)
        passed = answers["catch_passed"].dropna().astype(bool)
        rows.append({"item_id": item["item_id"], "source_ref": item["source_ref"], "is_catch": item["is_catch"],
                     "method_a": item["method_a"], "hit_index": item["hit_index"], "answers": len(answers),
                     "mean_score": float(scores.mean()) if len(scores) else None,
                     "prefer_first_share": float((scores > 0).mean()) if len(scores) else None,
                     "catch_pass_rate": float(passed.mean()) if len(passed) else None})
    return pd.DataFrame(rows)


def held_assignments(ledger: Ledger, responses: pd.DataFrame) -> list[dict]:
    """Every assignment held for review: why, and its answers beside the stimuli each item showed."""
    items = {item["item_id"]: item for item in ledger.items}
    found = []
    for assignment_id, review in sorted(ledger.data.get("review", {}).items()):
        rows = responses[responses["assignment_id"] == assignment_id]
        answers = []
        for row in rows.itertuples(index=False):
            item = items.get(row.item_id)
            if item is None:
                continue
            answers.append({"item_id": row.item_id, "position": int(item["position"]), "answer_raw": row.answer_raw,
                            "is_catch": bool(row.is_catch), "expected": item["expected"],
                            "catch_passed": None if pd.isna(row.catch_passed) else bool(row.catch_passed),
                            "stimuli": {side: str(ledger.folder / "stimuli" / name)
                                        for side, name in item["stimuli"].items()}})
        answers.sort(key=lambda answer: answer["position"])
        worker = rows["worker_hash"].iloc[0] if len(rows) else None
        found.append({"assignment_id": assignment_id, "hit_id": review["hit_id"], "reason": review["reason"],
                      "worker_hash": worker, "answers": answers})
    return found


def study_status(folder: str | Path) -> dict:
    """Everything above for one study folder, read now."""
    ledger = Ledger.load(folder)
    responses = read_study_table(Path(folder), "responses")
    counts = assignment_counts(ledger, responses)
    money = spend(ledger, counts["assignments_approved"])
    return {"study_id": ledger.study_id, "methods": list(ledger.data["study"]["methods"]), "counts": counts,
            "spend": money, "workers": int(responses.loc[responses["source"] == "mturk", "worker_hash"].nunique()),
            "target_workers": int(ledger.data["study"].get("target_workers", 40)),
            "answers": len(responses), "lab": lab_progress(ledger, responses), "ledger": ledger,
            "responses": responses}


def usd(cents: int | None) -> str:
    return "-" if cents is None else f"${usd_text(int(cents))}"
