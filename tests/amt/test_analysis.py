"""Analysis recovers a known answer distribution from simulated responses; quality checks fire."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amt.analysis import CATEGORIES, summarise
from eml_core.tables import SCHEMAS, frame

STUDY = {"study_id": "sim", "methods": ["decomposition", "gradcam"], "target_workers": 40}
TRUE_SHARES = {2: 0.35, 1: 0.25, 0: 0.2, -1: 0.12, -2: 0.08}


def simulate(workers=60, items=30, seed=0, straightliners=2, catch_per_worker=2, careless=3,
             ledger=None) -> pd.DataFrame:
    """Responses of `workers` workers to `items` items, answers drawn from TRUE_SHARES (mapped to the first method).

    With a ``ledger``, the items and catch trials are that study's own (ids the analysis recognises)."""
    rng = np.random.default_rng(seed)
    item_ids, catch_ids = [f"i{n}" for n in range(items)], [f"c{n}" for n in range(catch_per_worker)]
    if ledger is not None:
        item_ids = [i["item_id"] for i in ledger.items if not i["is_catch"]]
        catch_ids = [i["item_id"] for i in ledger.items if i["is_catch"]]
        items, catch_per_worker = len(item_ids), len(catch_ids)
    values, probabilities = zip(*TRUE_SHARES.items(), strict=True)
    rows = []
    for w in range(workers):
        worker = f"{w:016x}"
        for item in range(items):
            first_is_a = bool(rng.random() < 0.5)
            if w < straightliners:  # always clicks the first answer, whichever method is robot A
                score_a = 2
                score_first = score_a if first_is_a else -score_a
            else:
                score_first = int(rng.choice(values, p=probabilities))
                score_a = score_first if first_is_a else -score_first
            rows.append({"study_id": "sim", "source": "mturk", "hit_index": item // 10,
                         "assignment_id": f"a{w}-{item // 10}",
                         "worker_hash": worker, "item_id": item_ids[item], "position": item % 10, "is_catch": False,
                         "method_a": "decomposition" if first_is_a else "gradcam",
                         "method_b": "gradcam" if first_is_a else "decomposition", "answer_raw": str(score_a),
                         "score_a": score_a, "first_method": "decomposition", "score_first_method": score_first,
                         "work_seconds": 100.0})
        for c in range(catch_per_worker):
            passed = not (straightliners <= w < straightliners + careless and c == 0)
            rows.append({"study_id": "sim", "worker_hash": worker, "item_id": catch_ids[c], "is_catch": True,
                         "answer_raw": "2", "score_a": 2, "catch_expected": "A" if passed else "B",
                         "catch_passed": passed, "assignment_id": f"a{w}-c", "first_method": "decomposition"})
    return responses_table(rows)


def responses_table(rows: list[dict]):
    """Simulated answers: the columns a row does not set are null (the table itself refuses missing columns)."""
    return frame("responses", [{column: row.get(column) for column in SCHEMAS["responses"].names} for row in rows])


def test_shares_and_statistics_recover_the_simulated_distribution():
    summary, workers = summarise(simulate(straightliners=0, careless=0), STUDY)
    row = summary.iloc[0]
    for value, name in CATEGORIES:
        assert row[f"share_{name}"] == pytest.approx(TRUE_SHARES[value], abs=0.03), name
    expected_mean = sum(v * p for v, p in TRUE_SHARES.items())
    assert row["mean_score"] == pytest.approx(expected_mean, abs=0.08)
    assert row["mean_score_ci_items_low"] < expected_mean < row["mean_score_ci_items_high"]
    assert row["mean_score_ci_workers_low"] < expected_mean < row["mean_score_ci_workers_high"]
    assert row["sign_test_items_positive"] == 30 and row["sign_test_p"] < 1e-6 and row["wilcoxon_items_p"] < 1e-4
    assert row["workers"] == 60 and row["target_met"] and row["answers"] == 60 * 30 and row["items"] == 30
    assert row["prefer_first_share"] == pytest.approx(0.6, abs=0.03)


def test_no_preference_gives_no_significance():
    rng = np.random.default_rng(1)
    responses = simulate(straightliners=0, careless=0)
    flip = rng.random(len(responses)) < 0.5
    real = ~responses["is_catch"]
    responses.loc[real & flip, "score_first_method"] *= -1
    row = summarise(responses, STUDY)[0].iloc[0]
    assert row["sign_test_p"] > 0.01
    assert row["mean_score_ci_items_low"] < 0 < row["mean_score_ci_items_high"]


def test_catch_failures_straightliners_and_worker_target():
    summary, workers = summarise(simulate(workers=20, straightliners=2, careless=3), STUDY)
    row = summary.iloc[0]
    assert row["catch_answers"] == 40 and row["catch_failure_rate"] == pytest.approx(3 / 40)
    assert row["workers_failing_catch"] == 3
    assert row["straightliners"] == 2 and workers["straightlining"].sum() == 2
    # the comparison leaves out the 2 straight-liners and the 3 workers who failed a catch trial
    assert row["workers_total"] == 20 and row["workers"] == 15 and not row["target_met"]
    assert row["answers_excluded"] == 5 * 30 and row["answers"] == 15 * 30
    everyone = summarise(simulate(workers=20, straightliners=2, careless=3), STUDY, exclude_flagged=False)[0]
    assert everyone.iloc[0]["workers"] == 20 and everyone.iloc[0]["answers"] == 20 * 30
