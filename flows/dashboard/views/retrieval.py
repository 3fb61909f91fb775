"""Interactive retrieval (paper Figs. 10, 14, 15): precision@k per method, the benchmark table, and each
query's top-ranked images per method."""

from __future__ import annotations

import streamlit as st

from flows.dashboard import data
from flows.dashboard.common import run_page, shown_errors
from tasks import review

row, location = run_page("retrieval", "Interactive retrieval")

with shown_errors():
    if data.has_table(location, "retrieval_eval"):
        evaluation = data.table(location, "retrieval_eval")
        precision = evaluation[evaluation["metric"] == "precision"].copy()
        if len(precision):
            precision["method"] = precision["method"] + " (" + precision["region_feature"] + ")"
            st.subheader("Precision@k")
            for benchmark, group in precision.groupby("benchmark"):
                st.caption(benchmark)
                st.line_chart(group.pivot_table(index="k", columns="method", values="value") * 100)
        st.subheader("Every metric")
        st.dataframe(evaluation, hide_index=True, key="retrieval_eval")
    if data.has_table(location, "retrieval_rankings"):
        rankings = data.table(location, "retrieval_rankings")
        queries = sorted(rankings["query_id"].unique())
        query = st.selectbox("query", queries, key="query")
        one = rankings[rankings["query_id"] == query]
        first = one.iloc[0]
        st.subheader(f"Query {query} (class {first['query_label']}, {first['region_kind']} "
                     f"({first['box_x0']:.0f}, {first['box_y0']:.0f}, {first['box_x1']:.0f}, {first['box_y1']:.0f}))")
        picture = review.thumbnail(str(first["query_image"]), 200)
        if picture is not None:
            st.image(picture, caption=str(first["query_image"]))
        for (method, feature), group in one.groupby(["method", "region_feature"]):
            strip = review.ranking_strip(group)
            if strip is not None:
                st.image(strip, caption=f"{method} ({feature}): rank, class, score")
        st.dataframe(one, hide_index=True, key="rankings")
    for figure in data.figures(location):
        st.image(data.figure(location, figure), caption=figure)
