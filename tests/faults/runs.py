"""Helpers of the fault suite: run the localization flow, read its tables, compare them with a clean run's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from eml_core.results import resolve_run
from eml_core.tables import frame
from tasks.summary import TABLES

ROOT = Path(__file__).resolve().parents[2]
TINY = "tests.conftest:tiny"
SHARD_SIZE = 4  # 12 images -> 3 embed shards, 12 pairs -> 3 localize shards
REPAIR = "cached shard unreadable ("


def run_flow(dataset_root, out) -> dict:
    """The localization flow in this process (under the session's Prefect test harness)."""
    from flows.evaluate_localization import evaluate_localization
    from tasks.configs import LocalizationConfig

    return evaluate_localization(LocalizationConfig(dataset=f"cub:{dataset_root}", model=TINY, out=str(out),
                                                    shard_size=SHARD_SIZE))


def tables(out) -> dict[str, pd.DataFrame]:
    store = resolve_run(str(out), "localization")
    return {name: store.read_table(f"{name}.parquet") for name in TABLES}


def assert_same_tables(got: dict[str, pd.DataFrame], clean: dict[str, pd.DataFrame],
                       repaired: set[str] = frozenset()) -> None:
    """All six tables equal to the clean run's; ``errors`` may add one repair warning per file in ``repaired``.

    The tables are compared as written: the summary sorts ``localization_items`` by pair, side, method and
    threshold, and builds the others from it (or from the shards in shard order) deterministically.
    """
    for name in TABLES:
        table = got[name]
        if name == "errors":
            repairs = table["problem"].str.startswith(REPAIR)
            assert set(table.loc[repairs, "file"]) == set(repaired) and repairs.sum() == len(repaired), \
                table[repairs]
            assert (table.loc[repairs, "severity"] == "warning").all()
            assert table.loc[repairs, "problem"].str.endswith("): recomputed").all()
            table = frame("errors", table[~repairs].reset_index(drop=True))  # dtypes as without the repairs
        pd.testing.assert_frame_equal(table, clean[name], obj=name)


@dataclass
class Killed:
    returncode: int
    writes: list[str]  # paths of the writes started, in order
    output: str


def run_killed(dataset_root, out, kill_at: int, phase: str, api_url: str, prefect_home: Path) -> Killed:
    """``tests.faults.killed_run`` in a subprocess, talking to the session's Prefect server.

    Its own PREFECT_HOME keeps it off the user's profile and database. The Prefect API is the test harness's
    server rather than an ephemeral server of its own: starting one costs ~20 s per process on two cores, and a
    SIGKILLed process would leave it running. The process is started in its own session and, should it outlive
    the timeout, killed by its process id.
    """
    env = dict(os.environ, PREFECT_API_URL=api_url, PREFECT_HOME=str(prefect_home),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    child = subprocess.run([sys.executable, "-m", "tests.faults.killed_run", str(dataset_root), str(out),
                            str(kill_at), phase], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                           start_new_session=True)
    writes = re.findall(r"^write \d+ (.+)$", child.stdout, flags=re.MULTILINE)
    return Killed(child.returncode, writes, child.stdout[-3000:] + child.stderr[-3000:])
