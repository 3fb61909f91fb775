"""The fault suite's baseline: one clean run of the localization flow, which every faulted run must match."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

import eml_core.results
from eml_core.results import resolve_run
from tests.faults.runs import run_flow, tables


@dataclass
class CleanRun:
    out: Path
    tables: dict[str, pd.DataFrame]
    manifest: dict
    writes: list[str]  # every file the run wrote, relative to ``out``, in order


@pytest.fixture(scope="session")
def clean_localization(prefect_harness, tiny_synthetic_root, tmp_path_factory) -> CleanRun:
    out = tmp_path_factory.mktemp("clean") / "run"
    writes = []
    real_write = eml_core.results.write_bytes_atomic

    def noting(path, data):
        writes.append(str(Path(path).relative_to(out)))
        return real_write(path, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(eml_core.results, "write_bytes_atomic", noting)
        run_flow(tiny_synthetic_root, out)
    return CleanRun(out, tables(out), resolve_run(str(out), "localization").read_json("manifest.json"), writes)
