"""Shard-level work of the localization evaluation, as Prefect tasks.

Each task is the whole work of one step; ``task.fn(...)`` calls it as a plain
function with no Prefect (the benchmark does, to measure orchestration
overhead). Prefect's own result cache is off (``NO_CACHE``): shards are cached *in the results location*:
a shard's files carry a key hashing the checkpoint, the shard's items, the
method, the parameters and the code version, so a rerun after a crash (or on a
finished run) skips every shard whose files exist and read back whole — on a local folder or S3 alike
(a damaged cached file is recomputed and noted as a warning: :mod:`tasks.shard_cache`).
"""

from __future__ import annotations

import io
import os
import time
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.dataset_specs import dataset_from_spec
from eml_core.datasets import Dataset, ErrorRecord, Item
from eml_core.localization import localize_pairs
from eml_core.models import model_from_spec, resolve_device
from eml_core.results import ResultsLocation
from eml_core.retrieval import Pair, embed_items, same_class_pairs
from tasks.configs import LocalizationConfig
from tasks.provenance import code_version, content_key, model_fingerprint
from tasks.shard_cache import EMBEDDINGS, ShardCache


@lru_cache(maxsize=4)
def cached_model(spec: str, fingerprint: str, device: str):
    """One model per (spec, content) per process: shard tasks in the same worker share it."""
    return model_from_spec(spec).to(device).eval()


def shards(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _errors_frame(errors: list[ErrorRecord]) -> pd.DataFrame:
    return pd.DataFrame([e.to_dict() for e in errors], columns=list(ErrorRecord.__dataclass_fields__))


# ---------------------------------------------------------------------------------------------
# tasks (tag "gpu": a work pool can route them to GPU workers; CUDA is used when present)


@task(name="load-dataset", cache_policy=NO_CACHE)
def load_dataset(spec: str, split_rule: str | None = None) -> Dataset:
    """The dataset of ``spec``, split by ``split_rule`` (None: the kind's default; recorded in the Dataset)."""
    return dataset_from_spec(spec, split_rule)


@task(name="embed-shard", tags=["gpu"], cache_policy=NO_CACHE)
def embed_shard(out: str, model_spec: str, items: list[Item], index: int, device: str = "auto") -> dict:
    """Embeddings of one shard -> ``shards/embeddings/...npz`` (+ its errors). Skipped if already there, whole."""
    store = ResultsLocation(out)
    fingerprint = model_fingerprint(model_spec)
    key = content_key("embed", fingerprint, code_version(), [item_signature(i) for i in items])
    path = f"shards/embeddings/shard-{index:04d}-{key}.npz"
    errors_path = f"shards/errors/embed-{index:04d}-{key}.parquet"
    cache = ShardCache(store, "embed")
    if all([cache.usable(path, EMBEDDINGS), cache.usable(errors_path, "errors")]):  # both checked, both noted
        return {"path": path, "errors_path": errors_path, "computed": False}
    device = resolve_device(device)
    model = cached_model(model_spec, fingerprint, device)
    kept, embeddings, errors = embed_items(model, items, device=device)
    store.write_table(errors_path, "errors", _errors_frame(errors + cache.repairs))
    buffer = io.BytesIO()
    np.savez(buffer, image_ids=np.array([i.image_id for i in kept], dtype=str), embeddings=embeddings.numpy())
    store.write_bytes(path, buffer.getvalue())
    return {"path": path, "errors_path": errors_path, "computed": True}


def read_embeddings(out: str, paths: list[str]) -> dict[str, np.ndarray]:
    store = ResultsLocation(out)
    found = {}
    for path in paths:
        with np.load(io.BytesIO(store.read_bytes(path))) as archive:
            for image_id, vector in zip(archive["image_ids"], archive["embeddings"], strict=True):
                found[str(image_id)] = vector
    return found


@task(name="make-pairs", cache_policy=NO_CACHE)
def make_pairs(items: list[Item], embeddings: dict[str, np.ndarray], mode: str, seed: int,
                   splits: tuple[str, ...]) -> tuple[list[Pair], list[ErrorRecord]]:
    """One pair per embedded image with a box, within its class and split."""
    errors = []
    usable = []
    for item in items:
        if item.split not in splits or item.image_id not in embeddings:
            continue
        if item.box is None:
            errors.append(ErrorRecord("pairing", item.image_id, item.path, None,
                                      "no ground-truth box: not localized"))
            continue
        usable.append(item)
    if not usable:
        return [], errors
    vectors = torch.from_numpy(np.stack([embeddings[i.image_id] for i in usable]))
    pairs, pair_errors = same_class_pairs(usable, vectors, mode=mode, seed=seed)
    return pairs, errors + pair_errors


def item_signature(item: Item) -> tuple:
    """What decides an item's results: its file (path, size, modification time), label, split, size and box."""
    try:
        stat = os.stat(item.path)
        on_disk = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        on_disk = None
    return (item.image_id, item.relative_path, on_disk, item.label, item.split, item.size, item.box)


def localize_key(model_spec: str, pairs: list[Pair], method: str, config: LocalizationConfig) -> str:
    return content_key("localize", model_fingerprint(model_spec), code_version(), method,
                       [(p.pair_id, item_signature(p.query), item_signature(p.retrieved)) for p in pairs],
                       list(config.thresholds), config.connectivity, list(config.sides), config.resolution)


@task(name="localize-shard", tags=["gpu"], cache_policy=NO_CACHE)
def localize_shard(out: str, model_spec: str, pairs: list[Pair], index: int, config: LocalizationConfig) -> dict:
    """Maps and threshold sweep of one shard of pairs -> one Parquet file per method (+ errors).

    Methods whose file already exists (and reads back whole) are not recomputed;
    the backbone runs once for all the missing ones.
    """
    store = ResultsLocation(out)
    paths = {m: f"shards/localization/{m}/shard-{index:04d}-{localize_key(model_spec, pairs, m, config)}.parquet"
             for m in config.methods}
    errors_path = f"shards/errors/localize-{index:04d}-{content_key(sorted(paths.values()))}.parquet"
    cache = ShardCache(store, "localize")
    missing = [m for m, p in paths.items() if not cache.usable(p, "localization_items")]
    if cache.usable(errors_path, "errors") and not missing:
        return {"paths": paths, "errors_path": errors_path, "computed": [], "seconds": 0.0}
    started = time.perf_counter()
    device = resolve_device(config.device)
    model = cached_model(model_spec, model_fingerprint(model_spec), device)
    rows, errors = localize_pairs(model, pairs, methods=tuple(missing), thresholds=config.thresholds,
                                  connectivity=config.connectivity, batch_size=config.batch_size, device=device,
                                  sides=config.sides, resolution=config.resolution)
    # errors first: a shard counts as finished only once every method file exists
    store.write_table(errors_path, "errors", _errors_frame(errors + cache.repairs))
    frame = pd.DataFrame(rows)
    for method in missing:
        part = frame[frame["method"] == method] if len(frame) else frame
        store.write_table(paths[method], "localization_items", part)
    return {"paths": paths, "errors_path": errors_path, "computed": missing,
            "seconds": time.perf_counter() - started}
