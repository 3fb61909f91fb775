"""Held assignments: each answer beside the stimuli its item showed; approve or reject through the MTurk gateway
(the study's own mode: sandbox unless the dashboard was started with --live). The only page that changes
anything, and only through the gateway."""

from __future__ import annotations

import streamlit as st

from flows.dashboard import data
from flows.dashboard.common import current, shown_errors, study_page
from tasks import review

_, folder = study_page("Review held assignments")
settings = current()
with shown_errors():
    view = data.study(folder)
mode = "production MTurk (LIVE, real money)" if settings.live else "the MTurk sandbox"
st.caption(f"`{folder}` · actions go to {mode}; the study was launched {view['spend']['mode']}.")

if "review_message" in st.session_state:
    kind, text = st.session_state.pop("review_message")
    (st.success if kind == "ok" else st.error)(text)

held = view["held"]
if not held:
    st.success("Nothing is held for review.")
    st.stop()
st.write(f"{len(held)} assignments held for review.")
for assignment in held:
    name = assignment["assignment_id"]
    with st.expander(f"{name} · worker {assignment['worker_hash']} · {assignment['reason']}", expanded=True):
        for answer in assignment["answers"]:
            left, middle, right = st.columns([2, 2, 1])
            left.image(answer["stimuli"]["A"], caption="Robot A")
            middle.image(answer["stimuli"]["B"], caption="Robot B")
            verdict = review.ANSWER_WORDING.get(str(answer["answer_raw"]), str(answer["answer_raw"]))
            right.markdown(f"**Q{answer['position'] + 1}**: {verdict}")
            if answer["is_catch"]:
                right.markdown(f"catch trial: expected **{answer['expected']}**, "
                               f"{'passed' if answer['catch_passed'] else '**failed**'}")
        reason = st.text_input("reason shown to the worker (to reject)", key=f"reason-{name}")
        approve_column, reject_column = st.columns(2)
        if approve_column.button("Approve", key=f"approve-{name}"):
            try:
                review.approve(folder, name, settings.live)
                st.session_state["review_message"] = ("ok", f"approved {name}")
            except review.READ_ERRORS as error:
                st.session_state["review_message"] = ("error", " ".join(str(error).split()))
            data.study.clear()
            st.rerun()
        if reject_column.button("Reject", key=f"reject-{name}"):
            try:
                review.reject(folder, name, reason, settings.live)
                st.session_state["review_message"] = ("ok", f"rejected {name}")
            except review.READ_ERRORS as error:
                st.session_state["review_message"] = ("error", " ".join(str(error).split()))
            data.study.clear()
            st.rerun()
