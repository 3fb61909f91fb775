"""Prefect artifacts a reviewer can use: scoped keys, figures inside the report, provenance, the trend over runs.

What a run publishes (localization, diagnosis, a study's analysis) follows the same rules:

* **Keys are scoped.** A key is ``<kind>-<scope>-<what>``: the scope is the deployment's name (``adhoc`` for a
  run started by hand) and the dataset, or the study id, so the nightly run, an ad-hoc run on another dataset
  and each study each keep their own artifact history. Keys hold only lowercase letters, digits and dashes
  (Prefect's rule); a scope too long for a readable key is cut and followed by 6 hex digits of its hash.
* **Figures are inside the markdown** as ``data:image/png;base64`` URIs, downscaled to at most
  :data:`FIGURE_WIDTH` pixels wide, so the report shows them wherever Prefect's UI runs; the full-size PNGs
  stay in the run folder.
* **Provenance**: run id, checkpoint SHA-256, git commit, code version, errors and warnings counts.
* **Trend**: the headline metric over the catalog's last :data:`TREND_RUNS` runs of the same kind, scope and
  dataset, as a table and a small plot.
* **No link the UI cannot open.** A local path is never a link (it is shown as text). A link artifact is made
  only for an ``http(s)`` address: the review dashboard's page of the run when ``EML_DASHBOARD_URL`` says where
  the dashboard is served, or the AWS console's page of an ``s3://`` run on AWS itself.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from urllib.parse import quote, urlencode

import cv2
import numpy as np
import pandas as pd

from eml_core.results import ResultsLocation
from eml_core.stored_maps import decode
from tasks.runs import read_catalog

FIGURE_WIDTH = 480          # pixels: readable in the UI's report column, a few tens of KB per figure
TREND_RUNS = 10
KEY_LENGTH = 64
# Pairs of methods equal up to a positive factor for some heads, and why (DESIGN.md section 3, paper App. A).
KNOWN_COINCIDENCES = {
    frozenset({"gradcam_nonorm", "decomposition_bias"}):
        "with a GAP head (GAP followed by affine layers), Grad-CAM (no norm) is proportional to "
        "Decomposition+Bias by construction (paper Section V and Appendix A): same maps, same boxes",
}


# --- keys ------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    """Lowercase letters, digits and single dashes only (Prefect's artifact-key alphabet)."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]+", "-", str(text).lower())).strip("-")


def dataset_scope(spec: str) -> str:
    """A short name for a dataset spec: its kind and the last folder name (``cub:/data/CUB_200_2011`` ->
    ``cub-cub-200-2011``; ``synthetic`` -> ``synthetic``)."""
    kind, _, path = str(spec).partition(":")
    last = path.split(",")[0].rstrip("/").rsplit("/", 1)[-1] if path else ""
    return slug(f"{kind}-{last}" if last else kind) or "dataset"


def deployment_scope() -> str:
    """The name of the deployment this flow run belongs to, or ``adhoc`` for a run started by hand."""
    try:
        from prefect.runtime import deployment

        name = deployment.name
    except Exception:  # noqa: BLE001 - outside a flow run there is no deployment to ask about
        name = None
    return slug(name) if name else "adhoc"


def artifact_key(kind: str, what: str, *scope: str) -> str:
    """``<kind>-<scope...>-<what>`` in Prefect's key alphabet, at most :data:`KEY_LENGTH` characters."""
    middle = "-".join(part for part in (slug(s) for s in scope) if part)
    key = "-".join(part for part in (slug(kind), middle, slug(what)) if part)
    if len(key) <= KEY_LENGTH:
        return key
    digest = hashlib.sha256(middle.encode()).hexdigest()[:6]
    room = KEY_LENGTH - len(slug(kind)) - len(slug(what)) - len(digest) - 3
    return f"{slug(kind)}-{middle[:room].strip('-')}-{digest}-{slug(what)}"


# --- figures ---------------------------------------------------------------------------------------


def png_data_uri(png: bytes, max_width: int = FIGURE_WIDTH) -> str:
    """A PNG as a ``data:`` URI, downscaled (area interpolation) to at most ``max_width`` pixels wide."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a PNG image")
    height, width = image.shape[:2]
    if width > max_width:
        image = cv2.resize(image, (max_width, max(1, round(height * max_width / width))), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def markdown_image(alt: str, png: bytes) -> str:
    return f"![{alt}]({png_data_uri(png)})"


def trend_plot(trend: pd.DataFrame, title: str, ylabel: str) -> bytes:
    """PNG: one line per column of ``trend`` (index: run ids, oldest first), small."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 2.6), dpi=96)
    x = np.arange(len(trend))
    for column in trend.columns:
        axes.plot(x, trend[column].to_numpy(dtype=float), marker="o", label=str(column))
    axes.set_xticks(x, [str(run_id)[:15] for run_id in trend.index], rotation=30, ha="right", fontsize=6)
    axes.set_ylabel(ylabel, fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=6)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


# --- what a run says about itself ----------------------------------------------------------------


def headline_trend(root: str, kind: str, prefix: str, dataset: str | None = None,
                   last: int = TREND_RUNS) -> pd.DataFrame:
    """The headline metrics starting with ``prefix`` (``best_accuracy/``) of the last runs of ``kind`` (on
    ``dataset``, when given) in the catalog at ``root``: one row per run (index: run id, oldest first), one
    column per metric (prefix cut off), and the run's checkpoint hash (first 12 hex) in ``checkpoint``."""
    catalog = read_catalog(root)
    chosen = catalog[catalog["kind"] == kind]
    if dataset is not None:
        chosen = chosen[chosen["dataset"] == dataset]
    rows = {}
    for _, run in chosen.tail(last).iterrows():
        values = json.loads(run["headline"] or "{}")
        rows[run["run_id"]] = {key[len(prefix):]: value for key, value in values.items() if key.startswith(prefix)}
    table = pd.DataFrame.from_dict(rows, orient="index").sort_index(axis=1)
    table["checkpoint"] = [str(sha)[:12] for sha in chosen.tail(last)["checkpoint_sha256"]] if rows else []
    return table


def coinciding_methods(maps: pd.DataFrame, tolerance: float = 2e-2) -> list[tuple[str, str]]:
    """Pairs of methods whose rectified maps, each divided by its max, agree (to ``tolerance``, float16 storage
    included) on every stored item: the two then draw the same boxes at every threshold."""
    if maps.empty:
        return []
    shown: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for row in maps.itertuples(index=False):
        values = np.maximum(decode(row._asdict()), 0)
        peak = values.max() if np.isfinite(values).all() else 0
        shown.setdefault(row.method, {})[(row.pair_id, row.side)] = values / peak if peak > 0 else values
    methods = sorted(shown)
    pairs = []
    for n, first in enumerate(methods):
        for second in methods[n + 1:]:
            a, b = shown[first], shown[second]
            if a.keys() == b.keys() and all(a[key].shape == b[key].shape and np.allclose(a[key], b[key],
                                                                                        atol=tolerance)
                                            for key in a):
                pairs.append((first, second))
    return pairs


def coincidence_notes(pairs: list[tuple[str, str]]) -> list[str]:
    notes = []
    for first, second in pairs:
        why = KNOWN_COINCIDENCES.get(frozenset({first, second}), "their normalised maps are equal on every item")
        notes.append(f"**{first} and {second} coincide** on every item of this run: {why}.")
    return notes


def provenance_lines(manifest: dict, run_id: str, location: str) -> list[str]:
    checkpoint = manifest.get("checkpoint") or {}
    return ["| provenance | |", "|---|---|",
            f"| run | `{run_id}` |",
            f"| results | `{location}` |",
            f"| checkpoint | `{checkpoint.get('spec', '')}` |",
            f"| checkpoint SHA-256 | `{checkpoint.get('sha256', '') or ''}` |",
            f"| git commit | `{manifest.get('git_commit') or 'unknown'}` |",
            f"| code version | `{manifest.get('code_version') or ''}` |",
            f"| errors / warnings | {int(manifest.get('errors', 0))} / {int(manifest.get('warnings', 0))} "
            f"(`errors.parquet`) |"]


def dashboard_url(page: str, **query: str) -> str | None:
    """The dashboard page of a run or study when ``EML_DASHBOARD_URL`` (``http(s)://host:port``) is set."""
    base = os.environ.get("EML_DASHBOARD_URL", "").strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        return None
    return f"{base}/{page}?{urlencode(query)}"


def console_url(location: str) -> str | None:
    """The AWS console's page of an ``s3://`` location on AWS itself (None for a local folder or another
    S3 endpoint, whose pages a browser cannot open from a bare ``s3://`` address)."""
    if not location.startswith("s3://") or os.environ.get("AWS_ENDPOINT_URL_S3") or \
            os.environ.get("AWS_ENDPOINT_URL"):
        return None
    bucket, _, prefix = location[len("s3://"):].partition("/")
    return (f"https://s3.console.aws.amazon.com/s3/buckets/{quote(bucket)}?"
            f"{urlencode({'prefix': prefix.rstrip('/') + '/'})}")


def openable_link(location: str, page: str, **query: str) -> str | None:
    return dashboard_url(page, **query) or console_url(location)


# --- what each kind of run publishes -------------------------------------------------------------


def localization_markdown(result: dict, dataset_name: str, dataset_spec: str, root: str) -> str:
    """The localization report: Tables I and II, MaxBoxAcc, Recall@K, coinciding methods, figures, the trend
    of the best accuracy per method over the last runs on this dataset, provenance."""
    from tasks.summary import markdown_report

    store_location, manifest, run_id = result["location"], result["manifest"], result["run_id"]
    store = ResultsLocation(store_location)
    lines = [markdown_report(result, dataset_name), ""]
    boxacc = result["maxboxacc"]
    if len(boxacc):
        pivot = boxacc.pivot(index="method", columns="iou_threshold", values="maxboxacc") * 100
        lines += ["## MaxBoxAcc (%)", "", "| method | " + " | ".join(f"IoU >= {t:g}" for t in pivot.columns) + " |",
                  "|---|" + "---:|" * len(pivot.columns)]
        lines += [f"| {method} | " + " | ".join(f"{v:.1f}" for v in row.values) + " |"
                  for method, row in pivot.iterrows()]
        lines.append("")
    recall = result["retrieval"]
    if len(recall):
        lines += ["## Recall@K (%)", "", "| split | " + " | ".join(f"R@{k}" for k in sorted(recall["k"].unique()))
                  + " |", "|---|" + "---:|" * recall["k"].nunique()]
        for split, group in recall.groupby("split"):
            lines.append(f"| {split} | " + " | ".join(f"{v * 100:.1f}" for v in group.sort_values("k")["recall"])
                         + " |")
        lines.append("")
    maps = store.read_table("localization_maps.parquet", "localization_maps") \
        if store.exists("localization_maps.parquet") else pd.DataFrame()
    notes = coincidence_notes(coinciding_methods(maps))
    if notes:
        lines += ["## Notes", "", *notes, ""]
    for figure, title in (("figures/accuracy_vs_threshold.png", "Accuracy against threshold"),
                          ("figures/examples.png", "Examples: each method's map, its box (red), the true box (green)")):
        if figure in manifest.get("figures", []):
            lines += [f"## {title}", "", markdown_image(title, store.read_bytes(figure)), ""]
    trend = headline_trend(root, "localization", "best_accuracy/", dataset=dataset_spec)
    if len(trend):
        methods = [c for c in trend.columns if c != "checkpoint"]
        lines += [f"## Trend: best accuracy (%) over the last {len(trend)} runs on this dataset", "",
                  "| run | checkpoint | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
        for run, row in trend.iterrows():
            marker = " (this run)" if run == run_id else ""
            lines.append(f"| `{run}`{marker} | `{row['checkpoint']}` | "
                         + " | ".join("" if pd.isna(row[m]) else f"{row[m] * 100:.1f}" for m in methods) + " |")
        lines.append("")
        if len(trend) >= 2:
            lines += [markdown_image("trend", trend_plot(trend[methods] * 100, "best accuracy per method",
                                                         "accuracy (%)")), ""]
    lines += ["## Provenance", "", *provenance_lines(manifest, run_id, store_location)]
    return "\n".join(lines)


def publish_localization(result: dict, dataset_name: str, dataset_spec: str, root: str) -> dict[str, str]:
    """The run's Prefect artifacts (inside a flow run): Table II as a table, the full report as markdown, and a
    link only where the UI can open one. Returns ``{what: key}``."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    scope = (deployment_scope(), dataset_scope(dataset_spec))
    keys = {what: artifact_key("localization", what, *scope) for what in ("best", "report", "results")}
    best = result["best"]
    create_table_artifact(
        key=keys["best"],
        table=[{"method": r["method"], "best_accuracy_percent": round(r["best_accuracy"] * 100, 2),
                "best_threshold": r["best_threshold"], "images": int(r["count"])} for _, r in best.iterrows()],
        description=f"Table II: best localization accuracy per method on {dataset_name} (run {result['run_id']})")
    create_markdown_artifact(key=keys["report"], markdown=localization_markdown(result, dataset_name, dataset_spec,
                                                                                root),
                             description=f"Localization on {dataset_name}: tables, figures, trend, provenance")
    link = openable_link(result["location"], "localization", run=result["run_id"])
    if link:
        create_link_artifact(key=keys["results"], link=link, link_text=f"run {result['run_id']}",
                             description="this run's tables, maps and figures")
    else:
        keys.pop("results")
    return keys


ANSWER_NAMES = (("clearly_more", "clearly more"), ("slightly_more", "slightly more"), ("equally", "equally"),
                ("slightly_less", "slightly less"), ("clearly_less", "clearly less"))


def study_markdown(summary: pd.DataFrame) -> str:
    """The analysis in a few lines: shares of the five answers, mean score with its intervals, tests, catch
    trials (also what ``eml study analyze`` prints)."""
    row = summary.iloc[0]
    return "\n".join([
        f"# {row['study_id']}: {row['first_method']} vs {row['second_method']}", "",
        f"{row['answers']} answers on {row['items']} items from {row['workers']} workers "
        f"(target {row['target_workers']}: {'met' if row['target_met'] else 'NOT met'}); "
        f"{row['workers_total'] - row['workers']} workers and {row['answers_excluded']} answers left out "
        f"(failed catch trials, straight-lining, held or rejected).", "",
        "| clearly more | slightly more | equally | slightly less | clearly less |", "|---:|---:|---:|---:|---:|",
        "| " + " | ".join(f"{row[f'share_{n}'] * 100:.1f}%" for n, _ in ANSWER_NAMES) + " |", "",
        f"Mean score {row['mean_score']:+.2f} (95% CI over items {row['mean_score_ci_items_low']:+.2f} .. "
        f"{row['mean_score_ci_items_high']:+.2f}; over workers {row['mean_score_ci_workers_low']:+.2f} .. "
        f"{row['mean_score_ci_workers_high']:+.2f}); sign test over items p = {row['sign_test_p']:.3g}; "
        f"Wilcoxon over items "
        f"p = {row['wilcoxon_items_p']:.3g}.",
        f"Catch trials: {row['catch_answers']} answers, failure rate {row['catch_failure_rate'] * 100:.1f}%; "
        f"{row['straightliners']} straight-lining workers.",
    ])


def study_answer_table(summary: pd.DataFrame) -> list[dict]:
    """The five answers as rows (answer, share, count) plus the mean score with its item interval: what a
    reviewer reads, instead of the summary's 35 columns."""
    row = summary.iloc[0]
    answers = int(row["answers"])
    rows: list[dict] = [{"answer": f"{row['first_method']} {label}", "share_percent": round(row[f"share_{n}"] * 100, 1),
                         "answers": round(row[f"share_{n}"] * answers)} for n, label in ANSWER_NAMES]
    rows.append({"answer": f"mean score (95% CI over items {row['mean_score_ci_items_low']:+.2f} .. "
                           f"{row['mean_score_ci_items_high']:+.2f})", "share_percent": None,
                 "answers": answers, "mean_score": round(float(row["mean_score"]), 3)})
    return rows


def study_report(result: dict, status: dict, folder: str) -> str:
    """The full study report: the analysis, the Fig. 6 / 12 chart, progress, spend, worker quality, held work."""
    from amt.status import usd

    summary, workers = result["summary"], result["workers"]
    counts, money = status["counts"], status["spend"]
    lines = [study_markdown(summary), ""]
    if result.get("include_flagged"):
        lines += ["**Pilot analysis: flagged workers' and held assignments' answers are INCLUDED.**", ""]
    if result.get("chart"):
        lines += ["## Answers (Fig. 6 / 12)", "", markdown_image("answers", result["chart"]), ""]
    lines += ["## Progress", "", "| | count |", "|---|---:|",
              f"| HITs launched | {counts['hits_launched']} of {counts['hits']} |",
              f"| assignments submitted | {counts['assignments_submitted']} of {counts['assignments_expected']} |",
              f"| approved / held / rejected | {counts['assignments_approved']} / {counts['assignments_held']} / "
              f"{counts['assignments_rejected']} |",
              f"| MTurk workers | {status['workers']} (target {status['target_workers']}) |",
              f"| lab participants done | {int(status['lab']['done'].sum())} of {len(status['lab'])} |", "",
              "## Spend", "", f"Mode: {money['mode']}. Committed {usd(money['committed_cents'])}, paid "
              f"{usd(money['paid_cents'])} (approved assignments, fees included) against a budget cap of "
              f"{usd(money['budget_cents']) if money['budget_cents'] else 'none'}; the whole study would commit "
              f"{usd(money['full_study_cents'])}.", ""]
    if len(workers):
        seconds = workers["mean_work_seconds"].dropna()
        lines += ["## Worker quality", "",
                  f"{len(workers)} workers; {int((workers['catch_failed'] > 0).sum())} failed a catch trial, "
                  f"{int(workers['straightlining'].sum())} straight-lined"
                  + (f"; median time per assignment {seconds.median():.0f} s." if len(seconds) else "."), ""]
    if counts["assignments_held"]:
        link = dashboard_url("review", study=status["study_id"])
        where = f"the dashboard's [review page]({link})" if link else "the review dashboard (`eml dashboard`)"
        lines += [f"**{counts['assignments_held']} assignments are held for review**: approve or reject them in "
                  f"{where} or with `eml study reject`.", ""]
    lines += ["## Provenance", "", f"Study folder `{folder}`, build `{status['ledger'].build_id}`; "
              f"{len(result['errors'])} new problems recorded in `errors.parquet`."]
    return "\n".join(lines)


def publish_study(result: dict, status: dict, folder: str) -> dict[str, str]:
    """A study analysis' artifacts (inside a flow run), keyed by the study id."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    study_id = status["study_id"]
    keys = {what: artifact_key("study", what, study_id) for what in ("answers", "report")}
    create_table_artifact(key=keys["answers"], table=study_answer_table(result["summary"]),
                          description=f"{study_id}: share of each answer for the first method")
    create_markdown_artifact(key=keys["report"], markdown=study_report(result, status, folder),
                             description=f"{study_id}: analysis, chart, progress, spend, worker quality")
    return keys
