"""Faithfulness and sanity of the map methods (docs/faithfulness.md): deletion / insertion AUCs per method with
their bootstrap intervals, the mean curves, the point-specific ratio, and the cascading-randomization checks
(Spearman and SSIM per depth, and which methods pass)."""

from __future__ import annotations

import streamlit as st

from flows.dashboard import data
from flows.dashboard.common import run_page, shown_errors

row, location = run_page("faithfulness", "Faithfulness and sanity checks",
                         "lower deletion and higher insertion AUC are more faithful; `random` and "
                         "`gradient_oracle` are the references")

with shown_errors():
    manifest = data.manifest(location)
    if data.has_table(location, "faithfulness_summary"):
        summary = data.table(location, "faithfulness_summary")
        st.subheader("Area under the deletion and insertion curves (mean over pairs, bootstrap interval)")
        st.dataframe(summary.round(4), hide_index=True, key="faithfulness_summary")
        best = manifest.get("most_faithful") or []
        if best:
            st.caption("most faithful: " + "; ".join(f"{b['measure']} ({b['removal']}, {b['direction']} is better): "
                                                     f"{b['method']}" for b in best))
    if data.has_table(location, "faithfulness_curves"):
        curves = data.table(location, "faithfulness_curves")
        removal = st.selectbox("removal", sorted(curves["removal"].unique()), key="removal")
        curve = st.radio("curve", ["deletion", "insertion"], horizontal=True, key="curve")
        chosen = curves[(curves["removal"] == removal) & (curves["curve"] == curve)]
        st.subheader(f"Mean similarity of the pair as pixels are {'removed' if curve == 'deletion' else 'restored'}")
        st.line_chart(chosen.pivot_table(index="fraction", columns="method", values="similarity", aggfunc="mean"))
    if data.has_table(location, "sanity_summary"):
        sanity = data.table(location, "sanity_summary")
        st.subheader("Cascading randomization: Spearman to the trained model's maps, by depth")
        st.line_chart(sanity.pivot_table(index="depth", columns="method", values="spearman"))
        verdicts = manifest.get("sanity_verdicts") or []
        if verdicts:
            st.dataframe(verdicts, hide_index=True, key="sanity_verdicts")
    for figure in data.figures(location):
        st.image(data.figure(location, figure), caption=figure)
