"""Cross-view orientation (paper Fig. 9): the share within +-3.5 degrees per method, the error histograms,
Recall@K of the cross-view model, the items, and the run's figures (histograms, montages)."""

from __future__ import annotations

import streamlit as st

from flows.dashboard import data
from flows.dashboard.common import percent, run_page, shown_errors

row, location = run_page("orientation", "Cross-view orientation")

with shown_errors():
    if data.has_table(location, "orientation_summary"):
        summary = data.table(location, "orientation_summary")
        st.subheader("Share of pairs within 3.5 / 10 / 30 degrees")
        st.dataframe(percent(summary, ["within_3_5", "within_10", "within_30", "chance_within_3_5"]),
                     hide_index=True, key="orientation_summary")
    if data.has_table(location, "orientation_histogram"):
        histogram = data.table(location, "orientation_histogram")
        combos = histogram[["overall_map", "method", "aerial_fill"]].drop_duplicates()
        labels = [" · ".join(c) for c in combos.itertuples(index=False)]
        chosen = st.selectbox("histogram of", labels, key="histogram_of")
        overall_map, method, fill = chosen.split(" · ")
        one = histogram[(histogram["overall_map"] == overall_map) & (histogram["method"] == method)
                        & (histogram["aerial_fill"] == fill)]
        st.subheader("Orientation error (truth - estimate), 7-degree bins")
        st.bar_chart(one.set_index("bin_centre")["share"] * 100)
    if data.has_table(location, "crossview_recall"):
        st.subheader("Street-to-aerial Recall")
        st.dataframe(percent(data.table(location, "crossview_recall"), ["recall"]), hide_index=True,
                     key="crossview_recall")
    if data.has_table(location, "orientation_items"):
        items = data.table(location, "orientation_items")
        st.subheader("Pairs")
        method = st.selectbox("method", sorted(items["method"].unique()), key="items_method")
        low, high = st.slider("|error| (degrees)", 0.0, 180.0, (0.0, 180.0), 0.5, key="abs_error")
        chosen_items = items[(items["method"] == method) & items["abs_error"].between(low, high)]
        st.caption(f"{len(chosen_items)} rows")
        st.dataframe(chosen_items.head(500), hide_index=True, key="orientation_items")
    for figure in data.figures(location):
        st.image(data.figure(location, figure), caption=figure)
