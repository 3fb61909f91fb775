"""What every page shares: the results root, choosing a run, one-line errors."""

from __future__ import annotations

import contextlib

import pandas as pd
import streamlit as st

from flows.dashboard import data
from flows.dashboard.settings import Settings, settings
from tasks import review
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


def run_page(kind: str, title: str, note: str = "") -> tuple[pd.Series, str]:
    """A run page's top: its title, the run of ``kind`` chosen in the sidebar (the page stops when there is
    none) and a caption naming the run, its data, model and location (then ``note``). Returns the run's
    catalog row and its location."""
    st.title(title)
    row = choose_run(kind)
    if row is None:
        st.stop()
    location = row["location"]
    st.caption(f"Run `{row['run_id']}` on `{row['dataset']}` with `{row['model']}` · `{location}`"
               + (f" · {note}" if note else ""))
    return row, location


def study_page(title: str) -> tuple[str, str]:
    """A study page's top: its title and the study chosen in the sidebar (the first by id, or ``?study=<id>``
    from a link); the page stops with a hint when there is none. Returns the study's id and folder."""
    st.title(title)
    settings = current()
    with shown_errors():
        folders = review.study_folders(data.catalog(settings.results), list(settings.studies))
    if not folders:
        st.info("No study to show: analyse one with `eml study analyze FOLDER --results LOCATION`, or start the "
                "dashboard with `--study FOLDER`.")
        st.stop()
    ids = sorted(folders)
    wanted = st.query_params.get("study")
    study_id = st.sidebar.selectbox("study", ids, index=ids.index(wanted) if wanted in ids else 0, key="study")
    st.query_params["study"] = study_id
    return study_id, folders[study_id]


def percent(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    shown = frame.copy()
    for column in columns:
        shown[column] = (shown[column].astype(float) * 100).round(1)
    return shown
