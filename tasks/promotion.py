"""``eml promote CHECKPOINT``: make a checkpoint the model the nightly run uses, and record it in the catalog.

The nightly deployment reads ``$EML_MODELS/current.pt``. Promoting a checkpoint

1. checks it the way every run does before trusting it (format, kind, factory trust: it never runs code
   from the file, :func:`eml_core.models.check_checkpoint`) and refuses anything else;
2. copies it, content-addressed, to ``<models>/promoted/<sha256[:16]>.pt`` (kept: promotions are history,
   and a rollback is promoting an earlier one again);
3. replaces ``<models>/current.pt`` atomically (a copy, never a link: a nightly run that starts meanwhile
   reads the old model or the whole new one);
4. adds a run of kind ``promotion`` to the results root's catalog (checkpoint SHA-256, source path, the
   previous model's SHA-256, when), so the dashboard and each nightly run's catalog row (which records the
   checkpoint hash it evaluated) say which promoted model a number came from.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from eml_core.atomic import write_bytes_atomic
from eml_core.errors import ArgumentError
from eml_core.models import check_checkpoint
from eml_core.weights import sha256_of
from tasks.provenance import run_header, software
from tasks.runs import finish_run, start_run

CURRENT = "current.pt"


def promote(checkpoint: str, models: str, results: str) -> dict:
    """Promote ``checkpoint`` into the models folder ``models`` and record it under ``results``."""
    source = Path(checkpoint)
    if not source.is_file():
        raise ArgumentError("CHECKPOINT", f"{checkpoint}: no such checkpoint file")
    check_checkpoint(source)  # a file that is not a checkpoint eml wrote, or names untrusted code: refused here
    folder = Path(models)
    if folder.exists() and not folder.is_dir():
        raise ArgumentError("--models", f"{models} exists and is not a folder")
    if not results.startswith("s3://") and Path(results).exists() and not Path(results).is_dir():
        raise ArgumentError("--results", f"{results} exists and is not a folder")
    digest = sha256_of(source)
    current = folder / CURRENT
    previous = sha256_of(current) if current.is_file() else None
    kept = folder / "promoted" / f"{digest[:16]}.pt"
    if not kept.is_file():
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, kept.with_suffix(".part"))
        kept.with_suffix(".part").replace(kept)
    write_bytes_atomic(current, kept.read_bytes())
    run = start_run("promotion", results)
    manifest = {"kind": "promotion", "run": run_header(run),
                "config": {"checkpoint": str(source.resolve()), "models": str(folder.resolve())},
                "checkpoint": {"spec": str(current.resolve()), "sha256": digest, "source": str(source.resolve()),
                               "kept_as": str(kept.resolve())},
                "previous_sha256": previous, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                **software(), "errors": 0, "warnings": 0}
    run.location.write_json("manifest.json", manifest)
    row = finish_run(run, manifest, model=str(current.resolve()), checkpoint_sha256=digest,
                     headline={"promoted": 1.0})
    return {"current": str(current), "sha256": digest, "previous_sha256": previous, "kept_as": str(kept),
            "run_id": row["run_id"], "results": results}
