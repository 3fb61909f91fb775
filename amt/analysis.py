"""`eml study analyze`: the aggregation of the paper's Figs. 6 and 12, with the statistics around it.

For the comparison "first method vs second method" (the study's ``methods``),
every real answer is mapped back to the methods (``score_first_method``: +2 =
the first method's explanation is clearly more reasonable ... -2 = clearly less)
and the study reports

* the share of each of the five answers (Fig. 6),
* distinct workers against the target (40 by default),
* a two-sided **sign test** over items (the sign of each item's mean score, ties
  dropped; ``scipy.stats.binomtest``) and a **Wilcoxon signed-rank** test over the
  items' mean scores (``scipy.stats.wilcoxon``). Answers are clustered by item and
  by worker, so both tests take the item as the unit; answer-level counts are
  reported as description only,
* 95% **bootstrap** confidence intervals of the mean score and of the share of
  answers preferring the first method, resampling items and, separately, workers
  (2000 resamples, seeded),
* catch-trial failure rates, overall and per worker, and per-worker answer
  patterns (straight-lining: one raw answer in >= 90% of >= 5 answers).

By default the comparison uses only trustworthy answers: workers who failed a
catch trial or straight-lined, and assignments held for review or rejected, are
left out (``workers_total`` and ``answers_excluded`` say how many).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from scipy import stats

from eml_core.atomic import write_bytes_atomic
from eml_core.tables import ANSWER_CATEGORIES, SCHEMAS, frame

CATEGORIES = ANSWER_CATEGORIES
LABELS = {"clearly_more": "clearly more", "slightly_more": "slightly more", "equally": "equally",
          "slightly_less": "slightly less", "clearly_less": "clearly less"}

def _bootstrap(values: pd.Series, groups: pd.Series, statistic, rng: np.random.Generator, resamples: int = 2000):
    """Percentile 95% CI of ``statistic`` resampling whole groups (items or workers) with replacement."""
    by_group = [v.to_numpy() for _, v in values.groupby(groups.to_numpy())]
    if len(by_group) < 2:
        return float("nan"), float("nan")
    # A cluster bootstrap through scipy: resample the groups' indices, evaluate on their pooled answers.
    result = stats.bootstrap((np.arange(len(by_group)),),
                             lambda picks: statistic(np.concatenate([by_group[i] for i in picks])),
                             n_resamples=resamples, confidence_level=0.95, method="percentile", vectorized=False,
                             rng=rng)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def worker_patterns(responses: pd.DataFrame, study_id: str) -> pd.DataFrame:
    rows = []
    for worker, group in responses.groupby("worker_hash"):
        counts = group["answer_raw"].value_counts()
        catch = group[group["is_catch"]]
        share = float(counts.iloc[0] / len(group))
        rows.append({"study_id": study_id, "worker_hash": worker, "answers": len(group), "catch_answers": len(catch),
                     "catch_failed": int((~catch["catch_passed"].astype(bool)).sum()),
                     "most_common_answer": str(counts.index[0]), "most_common_share": share,
                     "straightlining": bool(len(group) >= 5 and share >= 0.9),
                     "mean_work_seconds": float(group["work_seconds"].mean()) if group["work_seconds"].notna().any()
                     else None})
    return pd.DataFrame(rows, columns=SCHEMAS["worker_patterns"].names)


def summarise(responses: pd.DataFrame, study: dict, seed: int = 0, excluded_assignments=(),
              exclude_flagged: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(study_summary, worker_patterns)`` of a study's responses."""
    rng = np.random.default_rng(seed)
    first, second = study["methods"]
    workers = worker_patterns(responses, study["study_id"])
    trusted = responses
    if exclude_flagged:
        flagged = set(workers.loc[(workers["catch_failed"] > 0) | workers["straightlining"], "worker_hash"])
        trusted = responses[~responses["worker_hash"].isin(flagged)
                            & ~responses["assignment_id"].isin(set(excluded_assignments))]
    real = trusted[~trusted["is_catch"].astype(bool)]
    scores = real["score_first_method"].astype(float)
    catch = responses[responses["is_catch"].astype(bool)]
    item_means = scores.groupby(real["item_id"]).mean()
    nonzero = item_means[item_means != 0]
    positive, negative = int((nonzero > 0).sum()), int((nonzero < 0).sum())
    included_workers = trusted["worker_hash"].nunique()
    target = study.get("target_workers", 40)
    row = {
        "study_id": study["study_id"], "first_method": first, "second_method": second, "answers": len(real),
        "items": real["item_id"].nunique(), "workers": included_workers,
        "workers_total": responses["worker_hash"].nunique(),
        "answers_excluded": int((~responses["is_catch"].astype(bool)).sum()) - len(real),
        "target_workers": target, "target_met": included_workers >= target,
        **{f"share_{name}": float((scores == value).mean()) if len(scores) else float("nan")
           for value, name in CATEGORIES},
        "mean_score": float(scores.mean()) if len(scores) else float("nan"),
        "prefer_first_share": float((scores > 0).mean()) if len(scores) else float("nan"),
        "answers_positive": int((scores > 0).sum()), "answers_negative": int((scores < 0).sum()),
        "sign_test_items_positive": positive, "sign_test_items_negative": negative,
        "sign_test_p": float(stats.binomtest(positive, positive + negative, 0.5).pvalue) if positive + negative
        else float("nan"),
        "wilcoxon_items_p": float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else float("nan"),
        "catch_answers": len(catch),
        "catch_failure_rate": float((~catch["catch_passed"].astype(bool)).mean()) if len(catch) else float("nan"),
        "workers_failing_catch": int((workers["catch_failed"] > 0).sum()),
        "straightliners": int(workers["straightlining"].sum()),
    }
    for groups, label in ((real["item_id"], "items"), (real["worker_hash"], "workers")):
        row[f"mean_score_ci_{label}_low"], row[f"mean_score_ci_{label}_high"] = _bootstrap(
            scores, groups, np.mean, rng)
        row[f"prefer_first_ci_{label}_low"], row[f"prefer_first_ci_{label}_high"] = _bootstrap(
            scores, groups, lambda v: float((v > 0).mean()), rng)
    return pd.DataFrame([row], columns=SCHEMAS["study_summary"].names), workers


def bar_chart(summary: pd.DataFrame) -> bytes:
    """PNG like the paper's Fig. 6: the share of each answer, mapped to the first method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    row = summary.iloc[0]
    names = [name for _, name in CATEGORIES]
    shares = [row[f"share_{n}"] * 100 for n in names]
    figure, axes = plt.subplots(figsize=(7, 3.2), dpi=120)
    colours = ["#1a9850", "#91cf60", "#bdbdbd", "#fc8d59", "#d73027"]
    axes.bar(range(5), shares, color=colours)
    axes.set_xticks(range(5), [f"{LABELS[n]}" for n in names])
    axes.set_ylabel("share of answers (%)")
    axes.set_title(f"{row['first_method']} vs {row['second_method']}: is {row['first_method']} more reasonable?\n"
                   f"{row['answers']} answers, {row['workers']} workers, "
                   f"sign test (items) p = {row['sign_test_p']:.3g}",
                   fontsize=9)
    for x, value in enumerate(shares):
        axes.text(x, value + 0.5, f"{value:.1f}", ha="center", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def known_item_responses(responses: pd.DataFrame, ledger) -> tuple[pd.DataFrame, list[dict]]:
    """The responses to items of the ledger, and one problem per unknown item whose answers were left out.

    A responses table can hold answers to items the ledger does not have (a table copied from another
    study, or a folder rebuilt by an older version): counting them would mix studies, so they are left
    out and reported.
    """
    known = {item["item_id"] for item in ledger.items}
    stray = responses[~responses["item_id"].isin(known)]
    problems = [{"stage": "analyze", "item": str(item_id), "file": "responses.parquet", "line": None,
                 "problem": f"{len(group)} answer(s) to item {str(item_id)[:64]!r}, which is not in the study's "
                            f"ledger, were left out of the analysis", "severity": "error"}
                for item_id, group in stray.groupby(stray["item_id"].astype(str))]
    return responses[responses["item_id"].isin(known)], problems


def analyse_folder(folder, seed: int = 0) -> dict:
    """Read a study folder's responses, write ``study_summary.parquet``, ``worker_patterns.parquet`` and
    ``study_summary.png``; returns the tables. Answers to items not in the ledger are left out and recorded
    in the study's ``errors.parquet``."""
    from pathlib import Path

    from amt.ledger import Ledger, study_lock
    from amt.responses import read_study_table, write_study_table
    from amt.study import StudyError

    folder = Path(folder)
    ledger = Ledger.load(folder)
    responses = read_study_table(folder, "responses")
    if responses.empty:
        raise StudyError(f"{folder}: no responses yet; collect (or serve) first")
    responses, problems = known_item_responses(responses, ledger)
    if problems:
        with study_lock(folder):  # errors.parquet is shared with collect and the lab server
            errors = read_study_table(folder, "errors")
            seen = set(zip(errors["item"], errors["problem"], strict=True))
            fresh = [p for p in problems if (p["item"], p["problem"]) not in seen]
            if fresh:
                write_study_table(folder, "errors", pd.concat([errors, frame("errors", fresh)], ignore_index=True))
    if responses.empty:
        raise StudyError(f"{folder}: none of the responses answers an item of this study's ledger "
                         f"({len(problems)} unknown items recorded in errors.parquet)")
    held = set(ledger.data.get("review", {})) | set(ledger.data.get("rejected", {}))
    summary, workers = summarise(responses, ledger.data["study"], seed, excluded_assignments=held)
    write_study_table(folder, "study_summary", summary)
    write_study_table(folder, "worker_patterns", workers)
    write_bytes_atomic(folder / "study_summary.png", bar_chart(summary))
    return {"summary": summary, "workers": workers, "errors": problems}
