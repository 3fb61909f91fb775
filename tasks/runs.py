"""Runs are kept: every run writes to its own folder, a ``latest`` pointer follows the newest finished run of
each kind, and a run catalog lists them all so runs can be compared over time.

Under a results root (``--out``, a local folder or ``s3://bucket/prefix``)::

    <root>/<kind>/<run id>/          the run: Parquet tables, figures, manifest.json (written last)
    <root>/<kind>/latest.json        {"run_id": ..., "location": ...} of the newest finished run of that kind
    <root>/<kind>/shards/...         the shard cache shared by that kind's runs (content-keyed: a rerun after a
                                     crash, or a run with nothing new to compute, reuses what is there)
    <root>/catalog/<kind>-<run id>.parquet   one catalog row per finished run (schema ``run_catalog``)

Run ids sort by time (``20261130T014501123456Z-3f9a``: UTC to the microsecond, then 4 random hex digits), so a
listing is a history. The catalog is one file per run, never a file rewritten by two runs, so concurrent runs
lose no row; :func:`read_catalog` reads them all.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from eml_core.results import LATEST, ResultsLocation, resolve_run  # noqa: F401 (resolve_run: part of this API)
from eml_core.tables import frame

CATALOG = "catalog"


def new_run_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Run:
    """One run of one kind of flow under a results root."""

    kind: str
    run_id: str
    root_uri: str
    started_at: str

    @property
    def root(self) -> ResultsLocation:
        return ResultsLocation(self.root_uri)

    @property
    def location(self) -> ResultsLocation:
        """Where this run's tables, figures and manifest go."""
        return self.root.child(f"{self.kind}/{self.run_id}")

    @property
    def cache(self) -> ResultsLocation:
        """The shard cache shared by the runs of this kind (content-keyed file names)."""
        return self.root.child(self.kind)


def start_run(kind: str, out: str) -> Run:
    return Run(kind, new_run_id(), str(out), datetime.now(UTC).isoformat(timespec="seconds"))


def finish_run(run: Run, manifest: dict, *, dataset: str = "", split_rule: str = "", model: str = "",
               checkpoint_sha256: str = "", headline: dict | None = None) -> dict:
    """Point ``latest`` at this run and add its catalog row; returns the row."""
    row = {
        "kind": run.kind, "run_id": run.run_id, "started_at": run.started_at,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "location": run.location.uri,
        "dataset": dataset, "split_rule": split_rule, "model": model, "checkpoint_sha256": checkpoint_sha256,
        "git_commit": str(manifest.get("git_commit") or ""),
        "parameters": json.dumps(manifest.get("config", {}), sort_keys=True, default=str),
        "headline": json.dumps(headline or {}, sort_keys=True, default=float),
        "errors": int(manifest.get("errors", 0)), "warnings": int(manifest.get("warnings", 0)),
    }
    run.root.write_table(f"{CATALOG}/{run.kind}-{run.run_id}.parquet", "run_catalog", [row])
    run.root.write_json(f"{run.kind}/{LATEST}", {"run_id": run.run_id, "location": run.location.uri})
    return row


def read_catalog(root: str) -> pd.DataFrame:
    """Every finished run under ``root``, oldest first (an empty catalog when there is none)."""
    store = ResultsLocation(root)
    parts = [store.read_table(path, "run_catalog") for path in store.list(CATALOG) if path.endswith(".parquet")]
    table = pd.concat(parts, ignore_index=True) if parts else frame("run_catalog", [])
    return frame("run_catalog", table.sort_values(["started_at", "run_id"], kind="stable").reset_index(drop=True))
