"""Charts the pages draw with Altair (bundled with Streamlit)."""

from __future__ import annotations

import altair as alt
import pandas as pd

ANSWERS = (("clearly_more", "clearly more"), ("slightly_more", "slightly more"), ("equally", "equally"),
           ("slightly_less", "slightly less"), ("clearly_less", "clearly less"))
COLOURS = ["#1a9850", "#91cf60", "#bdbdbd", "#fc8d59", "#d73027"]


def answer_shares(row: pd.Series) -> alt.Chart:
    """Fig. 6 / 12: the share of each answer for the first method."""
    shares = pd.DataFrame({"answer": [label for _, label in ANSWERS],
                           "share (%)": [float(row[f"share_{name}"]) * 100 for name, _ in ANSWERS]})
    return alt.Chart(shares).mark_bar().encode(
        x=alt.X("answer:N", sort=[label for _, label in ANSWERS],
                title=f"{row['first_method']} ... than {row['second_method']}"),
        y=alt.Y("share (%):Q"),
        color=alt.Color("answer:N", scale=alt.Scale(domain=[label for _, label in ANSWERS], range=COLOURS),
                        legend=None),
        tooltip=["answer", alt.Tooltip("share (%):Q", format=".1f")])


def intervals(row: pd.Series) -> alt.Chart:
    """The mean score (+2 .. -2) and the share preferring the first method, each with its 95% bootstrap
    intervals over items and over workers."""
    rows = []
    for statistic, value, key in (("mean score", row["mean_score"], "mean_score"),
                                  ("prefer first (share)", row["prefer_first_share"], "prefer_first")):
        for unit in ("items", "workers"):
            rows.append({"statistic": statistic, "resampled": unit, "value": float(value),
                         "low": float(row[f"{key}_ci_{unit}_low"]), "high": float(row[f"{key}_ci_{unit}_high"])})
    frame = pd.DataFrame(rows)
    base = alt.Chart(frame).encode(y=alt.Y("resampled:N", title=None))
    bars = base.mark_errorbar(ticks=True).encode(x=alt.X("low:Q", title="95% interval"), x2="high:Q")
    points = base.mark_point(filled=True, size=60).encode(x="value:Q", tooltip=["value", "low", "high"])
    return (bars + points).properties(height=70).facet(row=alt.Row("statistic:N", title=None)).resolve_scale(
        x="independent")
