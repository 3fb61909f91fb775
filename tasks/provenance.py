"""What a run records about itself: versions, git commit, code version, content hashes."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

from eml_core.weights import sha256_of


@lru_cache(maxsize=None)
def code_version() -> str:
    """SHA-256 (first 16 hex) of every eml_core source file: the code that computes results. Any change there
    invalidates cached shards (conservative: a docstring edit recomputes too, a stale result never survives)."""
    import eml_core

    digest = hashlib.sha256()
    for path in sorted(Path(eml_core.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def model_fingerprint(spec: str) -> str:
    """Checkpoint file hash; for a ``package.module:factory`` spec, a hash of the spec and the factory module's
    source (editing the factory invalidates cached results); for ``backbone:head``, of the spec itself
    (deterministic from its seed, with the library's code version in every cache key besides)."""
    path = Path(spec)
    if path.is_file():
        return sha256_of(path)
    digest = hashlib.sha256(f"spec:{spec}".encode())
    module_name, _, function = spec.partition(":")
    if function and "." in module_name:
        import importlib.util

        found = importlib.util.find_spec(module_name)
        if found is not None and found.origin and Path(found.origin).is_file():
            digest.update(Path(found.origin).read_bytes())
    return digest.hexdigest()


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("eml", "torch", "torchvision", "numpy", "opencv-python-headless", "pandas", "pyarrow", "prefect",
                    "pytorch-metric-learning", "boto3"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def software() -> dict:
    """What made a result, in every manifest: package versions, the git commit (``+dirty`` with local changes) and
    the code version (a hash of eml's own modules, which also keys the shard cache)."""
    return {"versions": versions(), "git_commit": git_commit(), "code_version": code_version()}


def run_header(run, cache: str | None = None) -> dict:
    """A manifest's ``run`` entry: the run's kind, id and start (and its shard cache, where it has one)."""
    header = {"kind": run.kind, "run_id": run.run_id, "started_at": run.started_at}
    return header | ({"cache": cache} if cache is not None else {})


def outcome(tables, errors, started: float, figures: list[str] | None = None) -> dict:
    """A manifest's ending: the run's tables (``NAME.parquet``), its figures (when it draws any), counts of error
    and warning rows (an ``errors`` frame with a ``severity`` column) and wall seconds since ``started``
    (``time.perf_counter``)."""
    import time

    return {"tables": {name: f"{name}.parquet" for name in tables}, **({"figures": figures} if figures is not None
                                                                      else {}),
            "errors": int((errors["severity"] == "error").sum()),
            "warnings": int((errors["severity"] == "warning").sum()),
            "wall_seconds": round(time.perf_counter() - started, 3)}


def file_stamp(path) -> tuple[int, int] | None:
    """A file's (size, modification time in ns) for cache keys: a changed file gets a new key. None when it cannot
    be read (the shard then records the error, and the key changes once the file is back)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


def content_key(*parts) -> str:
    """A short stable hash of JSON-able parts (cache keys)."""
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
