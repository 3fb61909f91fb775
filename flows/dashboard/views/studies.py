"""Studies: progress (HITs, assignments submitted / approved / held), spend against the budget, the Fig. 6 / 12
chart with its intervals, per-item answers, worker quality, lab participants, and analyses over time."""

from __future__ import annotations

import streamlit as st

from flows.dashboard import charts, data
from flows.dashboard.common import current, shown_errors, study_page
from tasks import review

study_id, folder = study_page("Studies")
with shown_errors():
    view = data.study(folder)
counts, money = view["counts"], view["spend"]
first, second = view["methods"]
st.caption(f"`{folder}` · {first} vs {second} · {money['mode']}")

st.subheader("Progress")
columns = st.columns(5)
columns[0].metric("HITs launched", f"{counts['hits_launched']} / {counts['hits']}")
columns[1].metric("assignments submitted", f"{counts['assignments_submitted']} / {counts['assignments_expected']}")
columns[2].metric("approved", counts["assignments_approved"])
columns[3].metric("held for review", counts["assignments_held"])
columns[4].metric("workers", f"{view['workers']} / {view['target_workers']}")
if counts["assignments_expected"]:
    st.progress(min(1.0, counts["assignments_submitted"] / counts["assignments_expected"]),
                text="assignments submitted")

st.subheader("Spend")
if money["budget_cents"]:
    st.progress(min(1.0, money["committed_share"]), text=f"committed ${money['committed_cents'] / 100:.2f} of the "
                                                           f"${money['budget_cents'] / 100:.2f} budget cap")
    st.progress(min(1.0, money["paid_share"]), text=f"paid ${money['paid_cents'] / 100:.2f} (approved assignments)")
else:
    st.write(f"Committed ${money['committed_cents'] / 100:.2f}, paid ${money['paid_cents'] / 100:.2f}; no budget cap "
             f"(a live launch needs one). The whole study would commit ${money['full_study_cents'] / 100:.2f}.")

summary = view["summary"]
st.subheader("Answers (Fig. 6 / 12)")
if summary.empty:
    st.info("Not analysed yet: `eml study analyze FOLDER` writes the summary.")
else:
    row = summary.iloc[0]
    st.write(f"{row['answers']} answers on {row['items']} items from {row['workers']} workers "
             f"({row['answers_excluded']} answers left out); sign test over items p = {row['sign_test_p']:.3g}, "
             f"Wilcoxon p = {row['wilcoxon_items_p']:.3g}.")
    left, right = st.columns(2)
    left.altair_chart(charts.answer_shares(row), width="stretch")
    right.altair_chart(charts.intervals(row))

st.subheader("Per item")
st.dataframe(view["items"], hide_index=True, key="items")
st.subheader("Worker quality")
workers = view["worker_patterns"]
if len(workers):
    st.write(f"{len(workers)} workers; {int((workers['catch_failed'] > 0).sum())} failed a catch trial, "
             f"{int(workers['straightlining'].sum())} straight-lined.")
    st.dataframe(workers.sort_values(["catch_failed", "most_common_share"], ascending=False), hide_index=True,
                 key="workers")
if len(view["lab"]):
    st.subheader("Lab participants")
    st.dataframe(view["lab"], hide_index=True, key="lab")

history = review.study_runs(data.catalog(current().results))
history = history[history["dataset"] == study_id].iloc[::-1]
if len(history) > 1:
    st.subheader("Analyses over time")
    trend = review.headline_table(history)
    st.line_chart(trend[["mean_score", "prefer_first_share"]])
if counts["assignments_held"]:
    st.page_link("views/review.py", label=f"Review the {counts['assignments_held']} held assignments")
