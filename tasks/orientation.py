"""Shard-level work of the cross-view orientation evaluation (paper Section VII-A), as Prefect tasks.

Caching follows :mod:`tasks.localization`: Prefect's own result cache is off, and each shard's
``orientation_items`` and ``errors`` files carry a key hashing the model, the code version, every pair's files
(paths, sizes, modification times), its angles, the overall maps, k and the fill. A rerun (after a crash, or a
second run with nothing new) skips every shard whose files exist and read back whole
(:mod:`tasks.shard_cache`). ``task.fn(...)`` calls a task as a plain function.
"""

from __future__ import annotations

import time
from functools import lru_cache

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.crossview_data import CrossViewDataset, CrossViewPair, crossview_dataset_from_spec
from eml_core.crossview_model import CrossViewModel, crossview_model_from_spec
from eml_core.datasets import ErrorRecord
from eml_core.models import resolve_device
from eml_core.orientation import random_rotations
from eml_core.orientation_evaluation import estimate_orientation
from eml_core.results import ResultsLocation
from tasks.configs import OrientationConfig
from tasks.provenance import code_version, content_key, file_stamp, model_fingerprint
from tasks.shard_cache import ShardCache

STAGE = "orientation"


@lru_cache(maxsize=4)
def cached_crossview_model(spec: str, fingerprint: str, device: str) -> CrossViewModel:
    """One two-branch model per (spec, content) per process: shard tasks in the same worker share it."""
    return crossview_model_from_spec(spec).to(device).eval()


@task(name="load-crossview-dataset", cache_policy=NO_CACHE)
def load_crossview_dataset(spec: str, splits: tuple[str, ...] | None = None) -> CrossViewDataset:
    """Pair records of ``splits`` (every header checked; problems are error rows; the embedded pairs are
    generated on first use)."""
    return crossview_dataset_from_spec(spec, list(splits) if splits else None)


def pairs_to_evaluate(dataset: CrossViewDataset, split: str, max_pairs: int | None
                      ) -> tuple[list[CrossViewPair], list[ErrorRecord]]:
    """The split's usable pairs in file order (the first ``max_pairs`` of them when given); an empty split is an
    error row, and the run goes on to write empty tables."""
    pairs = dataset.split(split)
    errors = []
    if not pairs:
        found = ", ".join(dataset.splits) or "none"
        errors.append(ErrorRecord("select_pairs", None, dataset.root, None,
                                  f"split {split!r} has no usable pairs (splits with pairs: {found}); nothing to "
                                  f"evaluate"))
    return (pairs[:max_pairs] if max_pairs else pairs), errors


def rotations_of(pairs: list[CrossViewPair], config: OrientationConfig) -> dict[str, list[float]]:
    """The angles of every pair: the configured list, or ``random_rotations`` drawn from (seed, pair id)."""
    if config.rotations:
        return {p.pair_id: list(config.rotations) for p in pairs}
    return random_rotations([p.pair_id for p in pairs], config.random_rotations or 1, config.seed)


def pair_signature(pair: CrossViewPair) -> tuple:
    """What decides a pair's results: its id, files (relative path, size, modification time), split, sizes,
    panorama crop and azimuth offset."""
    on_disk = [file_stamp(path) for path in (pair.panorama, pair.aerial)]
    return (pair.pair_id, pair.relative_panorama, pair.relative_aerial, on_disk, pair.split, pair.panorama_size,
            pair.aerial_size, pair.panorama_rows, pair.azimuth_offset)


def orientation_key(model_spec: str, pairs: list[CrossViewPair], rotations: dict[str, list[float]],
                    config: OrientationConfig) -> str:
    return content_key("orientation", model_fingerprint(model_spec), code_version(),
                       [(pair_signature(p), rotations[p.pair_id]) for p in pairs], list(config.overall_maps),
                       config.top_k, config.fill)


def _errors_frame(errors: list[ErrorRecord]) -> pd.DataFrame:
    return pd.DataFrame([e.to_dict() for e in errors])


@task(name="orientation-shard", tags=["gpu"], cache_policy=NO_CACHE)
def estimate_shard(out: str, model_spec: str, pairs: list[CrossViewPair], rotations: dict[str, list[float]],
                   index: int, config: OrientationConfig) -> dict:
    """Rotate, explain and estimate one shard of pairs -> its ``orientation_items`` and ``errors`` files.

    A shard whose two files already exist (and read back whole) is not recomputed.
    """
    store = ResultsLocation(out)
    key = orientation_key(model_spec, pairs, rotations, config)
    path = f"shards/orientation/shard-{index:04d}-{key}.parquet"
    errors_path = f"shards/errors/orientation-{index:04d}-{key}.parquet"
    cache = ShardCache(store, STAGE)
    if cache.usable(errors_path, "errors") and cache.usable(path, "orientation_items"):
        return {"path": path, "errors_path": errors_path, "computed": False, "seconds": 0.0, "explained": 0}
    started = time.perf_counter()
    device = resolve_device(config.device)
    model = cached_crossview_model(model_spec, model_fingerprint(model_spec), device)
    rows, errors = estimate_orientation(model, pairs, rotations, overall_maps=config.overall_maps,
                                        top_k=config.top_k or None, fill=config.fill, batch_size=config.batch_size,
                                        device=device, stage=STAGE)
    # errors first: a shard counts as finished only once its items file exists
    store.write_table(errors_path, "errors", _errors_frame(errors + cache.repairs))
    store.write_table(path, "orientation_items", rows)
    explained = len({(r["pair_id"], r["rotation"]) for r in rows})
    return {"path": path, "errors_path": errors_path, "computed": True, "seconds": time.perf_counter() - started,
            "explained": explained}
