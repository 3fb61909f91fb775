"""What every page shares: the results root, choosing a run, one-line errors."""

from __future__ import annotations

import contextlib

import pandas as pd
import streamlit as st

from flows.dashboard import data
from flows.dashboard.settings import Settings, settings
from tasks.review import READ_ERRORS


def current() -> Settings:
    chosen = settings()
    if not chosen.results:
        st.error("No results location: start the dashboard with `eml dashboard --results LOCATION`.")
        st.stop()
    return chosen


@contextlib.contextmanager
def shown_errors():
    """A results or study problem is one line on the page, never a traceback."""
    try:
        yield
    except READ_ERRORS as error:
        st.error(" ".join(str(error).split())[:600])
        st.stop()


def runs_of(kind: str) -> pd.DataFrame:
    return data.catalog(current().results).query("kind == @kind").reset_index(drop=True)


def run_label(row) -> str:
    return f"{row['run_id']}  ·  {row['dataset'] or '-'}  ·  {str(row['model'])[-40:] or '-'}"


def choose_run(kind: str, key: str = "run", label: str = "run") -> pd.Series | None:
    """A run of ``kind`` from the sidebar (the newest by default, or ``?run=<id>`` from a link)."""
    runs = runs_of(kind)
    if runs.empty:
        st.info(f"No finished {kind} run in {current().results} yet.")
        return None
    ids = list(runs["run_id"])
    wanted = st.query_params.get("run")
    index = ids.index(wanted) if wanted in ids else 0
    labels = {row["run_id"]: run_label(row) for _, row in runs.iterrows()}
    chosen = st.sidebar.selectbox(label, ids, index=index, format_func=labels.__getitem__, key=key)
    st.query_params["run"] = chosen
    return runs.set_index("run_id").loc[chosen].to_frame().T.reset_index(names="run_id").iloc[0]


def percent(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    shown = frame.copy()
    for column in columns:
        shown[column] = (shown[column].astype(float) * 100).round(1)
    return shown
