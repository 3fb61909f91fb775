"""Localization: Tables I and II, MaxBoxAcc, accuracy against threshold, the trend over runs, per-class accuracy,
and a gallery of each method's map with its box, filtered by class, IoU, and 'method A right where B is wrong'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from flows.dashboard import data
from flows.dashboard.common import choose_run, percent, runs_of, shown_errors
from tasks import review

PAGE_SIZE = 12

st.title("Localization")
row = choose_run("localization")
if row is None:
    st.stop()
location = row["location"]
with shown_errors():
    manifest = data.manifest(location)
    summary = data.table(location, "localization_summary")
    best = data.table(location, "localization_best")
st.caption(f"Run `{row['run_id']}` on `{row['dataset']}` with `{row['model']}` · checkpoint "
           f"`{str(row['checkpoint_sha256'])[:16]}` · commit `{row['git_commit'] or 'unknown'}` · "
           f"{row['errors']} errors, {row['warnings']} warnings · `{location}`")
section = st.radio("view", ["Tables", "Curves", "Trend", "Per class", "Gallery"], horizontal=True, key="section")
methods = list(best["method"])

if section == "Tables":
    st.subheader("Table II: best accuracy per method")
    st.dataframe(percent(best, ["best_accuracy"]), hide_index=True, key="table2")
    st.subheader("Table I: accuracy (%) per method and threshold (IoU > 0.5)")
    if len(summary):
        st.dataframe((summary.pivot(index="method", columns="threshold", values="accuracy") * 100).round(1),
                     key="table1")
    with shown_errors():
        boxacc = data.table(location, "maxboxacc")
        recall = data.table(location, "retrieval_metrics")
    st.subheader("MaxBoxAcc (%)")
    if len(boxacc):
        st.dataframe((boxacc.pivot(index="method", columns="iou_threshold", values="maxboxacc") * 100).round(1),
                     key="maxboxacc")
    st.subheader("Recall@K (%)")
    if len(recall):
        st.dataframe((recall.pivot(index="split", columns="k", values="recall") * 100).round(1), key="recall")

elif section == "Curves":
    with shown_errors():
        curves = data.accuracy_curves(location)
    st.subheader("Accuracy against threshold (every threshold of the run's grid)")
    st.line_chart(curves.pivot(index="threshold", columns="method", values="accuracy") * 100)
    for figure in ("figures/accuracy_vs_threshold.png", "figures/examples.png"):
        if figure in data.figures(location):
            st.image(data.figure(location, figure), caption=figure)

elif section == "Trend":
    runs = runs_of("localization")
    same = runs[runs["dataset"] == row["dataset"]].iloc[::-1]
    trend = review.headline_table(same)
    columns = [c for c in trend.columns if c.startswith("best_accuracy/")]
    st.subheader(f"Best accuracy per method over the {len(same)} runs on this dataset")
    if columns:
        shown = trend[columns].rename(columns=lambda c: c.split("/", 1)[1]) * 100
        st.line_chart(shown)
        listing = shown.round(1)
        listing.insert(0, "checkpoint", list(same["checkpoint_sha256"].str[:12]))
        st.dataframe(listing, key="trend")

elif section == "Per class":
    with shown_errors():
        items = data.best_items(location)
    classes = review.per_class_accuracy(items)
    st.subheader("Accuracy per class at each method's best threshold")
    wide = classes.pivot(index="label", columns="method", values="accuracy") * 100
    wide["images"] = classes.groupby("label")["count"].max()
    st.dataframe(wide.round(1), key="per_class")
    st.bar_chart(wide.drop(columns="images"))

else:  # the gallery
    with shown_errors():
        items = data.best_items(location)
        gallery = data.gallery(location)
        maps = data.stored_maps(location)
    if not len(maps):
        st.warning("This run stores no maps (made before maps were stored): boxes only.")
    filters = st.columns(4)
    labels = sorted(int(v) for v in gallery["label"].unique())
    label = filters[0].selectbox("class", ["all", *map(str, labels)], key="class")
    iou_method = filters[1].selectbox("IoU of", ["any method", *methods], key="iou_method")
    iou_range = filters[1].slider("IoU range", 0.0, 1.0, (0.0, 1.0), 0.05, key="iou_range")
    right = filters[2].selectbox("right (method A)", ["-", *methods], key="right")
    wrong = filters[3].selectbox("where wrong (method B)", ["-", *methods], key="wrong")
    chosen = review.GalleryFilter(
        label=None if label in (None, "all") else int(str(label)),
        iou_method=None if iou_method == "any method" else iou_method, iou_low=iou_range[0], iou_high=iou_range[1],
        right=None if right == "-" else right, wrong=None if wrong == "-" else wrong)
    found = review.filter_gallery(gallery, chosen)
    pages = max(1, int(np.ceil(len(found) / PAGE_SIZE)))
    page = st.number_input("page", 1, pages, 1, key="page") if pages > 1 else 1
    st.markdown(f"**{len(found)} of {len(gallery)} images** match · page {page} of {pages} · "
                f"red: the method's box at its best threshold, green: the true box")
    missing = 0
    for entry in found.iloc[(page - 1) * PAGE_SIZE:page * PAGE_SIZE].itertuples(index=False):
        tiles, real = review.gallery_tiles(location, manifest, maps, items, entry.pair_id, entry.side, methods)
        missing += not real
        if tiles:
            height = min(t.shape[0] for t in tiles)
            st.image(np.concatenate([t[:height] for t in tiles], axis=1),
                     caption=f"{entry.image} · class {entry.label} · {entry.side} of pair {entry.pair_id}")
    if missing:
        st.caption(f"{missing} images are not readable on this machine (dataset folder "
                   f"`{(manifest.get('dataset') or {}).get('root')}`): their maps are drawn on grey.")
    st.dataframe(pd.DataFrame(found).head(500), hide_index=True, key="gallery_table")
