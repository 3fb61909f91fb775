"""How ``eml dashboard`` hands the app its options: environment variables of the Streamlit process (the app is a
script Streamlit runs, so it takes no Python arguments; tests set the same variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RESULTS = "EML_DASHBOARD_RESULTS"    # the results root: a local folder or s3://bucket/prefix
STUDIES = "EML_DASHBOARD_STUDIES"    # study folders to show besides those the catalog names (os.pathsep-separated)
LIVE = "EML_DASHBOARD_LIVE"          # "1": approve/reject on production MTurk; otherwise the sandbox
APP = Path(__file__).resolve().parent / "app.py"


@dataclass(frozen=True)
class Settings:
    results: str
    studies: tuple[str, ...]
    live: bool


def environment(results: str, studies: tuple[str, ...] = (), live: bool = False) -> dict[str, str]:
    return {RESULTS: results, STUDIES: os.pathsep.join(studies), LIVE: "1" if live else "0"}


def settings() -> Settings:
    results = os.environ.get(RESULTS, "").strip()
    studies = tuple(s for s in os.environ.get(STUDIES, "").split(os.pathsep) if s.strip())
    return Settings(results, studies, os.environ.get(LIVE) == "1")
