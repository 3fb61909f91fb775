"""Runs: the catalog, filtered by kind, dataset and model; two runs compared side by side; a metric over runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from flows.dashboard import data
from flows.dashboard.common import current, shown_errors
from tasks import review

st.title("Runs")
settings = current()
with shown_errors():
    runs = data.catalog(settings.results)
st.caption(f"Results root `{settings.results}`: {len(runs)} finished runs (newest first).")
if runs.empty:
    st.info("No finished run here yet: run a flow with `--out` at this location.")
    st.stop()

columns = st.columns(3)
kinds = columns[0].multiselect("kind", sorted(runs["kind"].unique()), key="kinds")
datasets = columns[1].multiselect("dataset", sorted(set(runs["dataset"])), key="datasets")
models = columns[2].multiselect("model", sorted(set(runs["model"])), key="models")
keep = pd.Series(True, index=runs.index)
for column, chosen in (("kind", kinds), ("dataset", datasets), ("model", models)):
    if chosen:
        keep &= runs[column].isin(chosen)
shown = runs[keep].reset_index(drop=True)


def _headline_text(headline: dict) -> str:
    picked = [(k, v) for k, v in headline.items() if k.startswith(("best_accuracy/", "mean_score", "recall@1/"))]
    return ", ".join(f"{k} {v:.3f}" for k, v in picked[:6])


listing = pd.DataFrame({
    "run": shown["run_id"], "kind": shown["kind"], "started": shown["started_at"], "dataset": shown["dataset"],
    "model": shown["model"], "checkpoint": shown["checkpoint_sha256"].str[:12], "commit": shown["git_commit"].str[:10],
    "errors": shown["errors"], "warnings": shown["warnings"],
    "headline": [_headline_text(h) for h in shown["headline"]]})
st.dataframe(listing, hide_index=True, width="stretch", key="listing")
st.caption(f"{len(shown)} of {len(runs)} runs shown")

st.header("Compare two runs")
ids = list(shown["run_id"])
if len(ids) < 2:
    st.info("Filter down to at least two runs to compare them.")
    st.stop()
left, right = st.columns(2)
first = left.selectbox("first (older)", ids, index=1, key="first")
second = right.selectbox("second (newer)", ids, index=0, key="second")
comparison = review.compare_runs(shown, first, second)
st.subheader("Headline metrics (delta = second - first)")
st.dataframe(comparison, hide_index=True, width="stretch", key="comparison")
changed = review.compare_parameters(shown, first, second)
st.subheader("What differs")
if changed.empty:
    st.write("Same dataset, model, checkpoint, commit and parameters.")
else:
    st.dataframe(changed, hide_index=True, width="stretch", key="changed")
by_id = shown.set_index("run_id")
if by_id.loc[first, "kind"] == by_id.loc[second, "kind"] == "localization":
    with shown_errors():
        tables = [data.table(by_id.loc[run, "location"], "localization_best").set_index("method")
                  for run in (first, second)]
    side = tables[0][["best_accuracy", "best_threshold"]].merge(
        tables[1][["best_accuracy", "best_threshold"]], left_index=True, right_index=True, how="outer",
        suffixes=(" (first)", " (second)"))
    side["delta (points)"] = (side["best_accuracy (second)"] - side["best_accuracy (first)"]) * 100
    st.subheader("Table II side by side")
    st.dataframe(side, width="stretch", key="table2")

st.header("A metric over runs")
kind = st.selectbox("kind", sorted(shown["kind"].unique()), key="trend_kind")
of_kind = shown[shown["kind"] == kind].iloc[::-1]
metrics = review.headline_table(of_kind)
if metrics.empty or not len(metrics.columns):
    st.info("These runs record no headline metric.")
else:
    metric = st.selectbox("metric", list(metrics.columns), key="trend_metric")
    st.line_chart(metrics[[metric]].reset_index(names="run"), x="run", y=metric)
