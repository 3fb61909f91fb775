"""A demo results root for the dashboard tests, built once per session (tests that act on the study copy it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dashboard.synthetic import demo_root


@pytest.fixture(scope="session")
def demo(tiny_synthetic_root, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("dashboard")
    built = demo_root(base / "results", Path(tiny_synthetic_root), base / "study")
    return {**built, "root": str(base / "results"), "dataset_root": Path(tiny_synthetic_root)}


@pytest.fixture
def study_copy_of_demo(demo, tmp_path) -> Path:
    target = tmp_path / "study"
    shutil.copytree(demo["study_folder"], target)
    return target
