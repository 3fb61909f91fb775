"""The review dashboard (``eml dashboard --results LOCATION``): one page per kind of result, over the run catalog.

Streamlit runs this file; the pages are the files in ``views/``. Everything is read through :mod:`tasks.review`
(local folders and S3); the only writes are the study actions of the review page, through the MTurk gateway.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="eml review", layout="wide")
pages = [
    st.Page(HERE / "views" / "runs.py", title="Runs", default=True),  # served at /
    st.Page(HERE / "views" / "localization.py", title="Localization", url_path="localization"),
    st.Page(HERE / "views" / "orientation.py", title="Orientation", url_path="orientation"),
    st.Page(HERE / "views" / "retrieval.py", title="Retrieval", url_path="retrieval"),
    st.Page(HERE / "views" / "faithfulness.py", title="Faithfulness", url_path="faithfulness"),
    st.Page(HERE / "views" / "studies.py", title="Studies", url_path="studies"),
    st.Page(HERE / "views" / "review.py", title="Review held work", url_path="review"),
]
st.navigation(pages).run()
