"""The dashboard's reads, cached. A finished run never changes, so its tables are read once per process and
shared by every session (``st.cache_resource``: no copy per call; pages never modify them). The catalog and study
folders change while the dashboard runs: they are re-read after a few seconds (``ttl``)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tasks import review

RUN_CACHE = 16        # runs kept in memory at once (least recently used dropped)


@st.cache_data(ttl=15, show_spinner=False)
def catalog(root: str) -> pd.DataFrame:
    return review.catalog(root)


@st.cache_resource(max_entries=RUN_CACHE, show_spinner=False)
def manifest(location: str) -> dict:
    return review.manifest(location)


@st.cache_resource(max_entries=4 * RUN_CACHE, show_spinner=False)
def table(location: str, name: str) -> pd.DataFrame:
    return review.run_table(location, name)


@st.cache_resource(max_entries=RUN_CACHE, show_spinner=False)
def has_table(location: str, name: str) -> bool:
    return review.has_table(location, name)


@st.cache_resource(max_entries=RUN_CACHE, show_spinner=False)
def figures(location: str) -> list[str]:
    return review.figures(location)


@st.cache_resource(max_entries=4 * RUN_CACHE, show_spinner=False)
def figure(location: str, relative: str) -> bytes:
    return review.read_bytes(location, relative)


@st.cache_resource(max_entries=RUN_CACHE, show_spinner="reading the items")
def best_items(location: str) -> pd.DataFrame:
    return review.best_items(location)


@st.cache_resource(max_entries=RUN_CACHE, show_spinner=False)
def gallery(location: str) -> pd.DataFrame:
    return review.gallery_frame(best_items(location))


@st.cache_resource(max_entries=RUN_CACHE, show_spinner=False)
def accuracy_curves(location: str) -> pd.DataFrame:
    return review.accuracy_curves(location)


@st.cache_resource(max_entries=RUN_CACHE, show_spinner="reading the stored maps")
def stored_maps(location: str) -> review.StoredMaps:
    return review.StoredMaps(location)


@st.cache_data(ttl=5, show_spinner=False)
def study(folder: str) -> dict:
    view = review.study_view(folder)
    view.pop("ledger")  # not picklable data a page needs; the view's tables and counts are
    return view
