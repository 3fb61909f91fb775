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
import time
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.batches import default_batch_size
from eml_core.dataset_specs import dataset_from_spec
from eml_core.datasets import Dataset, ErrorRecord, Item
from eml_core.errors import ArgumentError
from eml_core.localization import localize_pairs
from eml_core.models import model_from_spec, resolve_device
from eml_core.results import ResultsLocation
from eml_core.retrieval import Pair, embed_items, same_class_pairs
from tasks.configs import LocalizationConfig
from tasks.provenance import code_version, content_key, file_stamp, model_fingerprint
from tasks.shard_cache import EMBEDDINGS, FEATURE_MAPS, ShardCache


@lru_cache(maxsize=4)
def cached_model(spec: str, fingerprint: str, device: str):
    """One model per (spec, content) per process: shard tasks in the same worker share it."""
    return model_from_spec(spec).to(device).eval()


def _errors_frame(errors: list[ErrorRecord]) -> pd.DataFrame:
    return pd.DataFrame([e.to_dict() for e in errors], columns=list(ErrorRecord.__dataclass_fields__))


# ---------------------------------------------------------------------------------------------
# tasks (tag "gpu": a work pool can route them to GPU workers; CUDA is used when present)


@task(name="load-dataset", cache_policy=NO_CACHE)
def load_dataset(spec: str, split_rule: str | None = None) -> Dataset:
    """The dataset of ``spec``, split by ``split_rule`` (None: the kind's default; recorded in the Dataset)."""
    return dataset_from_spec(spec, split_rule)


def embed_key(model_spec: str, items: list[Item], precision: str = "float32") -> str:
    return content_key("embed", model_fingerprint(model_spec), code_version(), precision,
                       [item_signature(i) for i in items])


def feature_maps_path(index: int, key: str, dtype: str) -> str:
    """Where an embed shard keeps its images' feature maps when the flow reuses them (``float16``/``float32``)."""
    return f"shards/feature_maps/shard-{index:04d}-{content_key(key, dtype)}.npz"


@task(name="embed-shard", tags=["gpu"], cache_policy=NO_CACHE)
def embed_shard(out: str, model_spec: str, items: list[Item], index: int, device: str = "auto",
                batch_size: int | None = None, precision: str = "float32", feature_maps: str = "none") -> dict:
    """Embeddings of one shard -> ``shards/embeddings/...npz`` (+ its errors). Skipped if already there, whole.

    ``feature_maps`` ``"float16"``/``"float32"``: the backbone's feature map of every embedded image is kept too,
    at that precision, in ``shards/feature_maps/...npz``, for the localization shards to explain from (no image
    decoded twice, no second backbone pass); ``"none"`` keeps none.
    """
    store = ResultsLocation(out)
    key = embed_key(model_spec, items, precision)
    path = f"shards/embeddings/shard-{index:04d}-{key}.npz"
    errors_path = f"shards/errors/embed-{index:04d}-{key}.parquet"
    maps_path = None if feature_maps == "none" else feature_maps_path(index, key, feature_maps)
    cache = ShardCache(store, "embed")
    wanted = [(path, EMBEDDINGS), (errors_path, "errors")] + ([(maps_path, FEATURE_MAPS)] if maps_path else [])
    if all([cache.usable(p, kind) for p, kind in wanted]):  # every file checked, every repair noted
        return {"path": path, "errors_path": errors_path, "feature_maps_path": maps_path, "computed": False}
    device = resolve_device(device)
    model = cached_model(model_spec, model_fingerprint(model_spec), device)
    kept_maps: list[torch.Tensor] | None = [] if maps_path else None
    kept, embeddings, errors = embed_items(model, items, batch_size=batch_size or default_batch_size(device),
                                           device=device, feature_maps=kept_maps, precision=precision)
    # errors first, feature maps before embeddings: a shard whose embeddings exist has everything else
    store.write_table(errors_path, "errors", _errors_frame(errors + cache.repairs))
    image_ids = np.array([i.image_id for i in kept], dtype=str)
    if maps_path and kept_maps is not None:
        store.write_bytes(maps_path, feature_maps_bytes(image_ids, kept_maps, feature_maps))
    buffer = io.BytesIO()
    np.savez(buffer, image_ids=image_ids, embeddings=embeddings.numpy())
    store.write_bytes(path, buffer.getvalue())
    return {"path": path, "errors_path": errors_path, "feature_maps_path": maps_path, "computed": True}


def feature_maps_bytes(image_ids: np.ndarray, maps: list[torch.Tensor], dtype: str) -> bytes:
    """An ``.npz`` archive: ``image_ids`` and one array ``map_NNNNN`` (C, h, w) per image, in ``dtype`` (one
    array per image: models without a fixed input size give maps of different sizes)."""
    buffer = io.BytesIO()
    arrays: dict[str, np.ndarray] = {"image_ids": image_ids}
    arrays.update({f"map_{n:05d}": m.numpy().astype(dtype, copy=False) for n, m in enumerate(maps)})
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its allow_pickle flag
    return buffer.getvalue()


def read_feature_maps(out: str, paths: list[str], wanted: set[str]) -> dict[str, torch.Tensor]:
    """The feature maps of the ``wanted`` image ids found in the embed shards' ``paths`` (as stored)."""
    store = ResultsLocation(out)
    found = {}
    for path in paths:
        with np.load(io.BytesIO(store.read_bytes(path))) as archive:
            for n, image_id in enumerate(archive["image_ids"]):
                if str(image_id) in wanted:
                    found[str(image_id)] = torch.from_numpy(archive[f"map_{n:05d}"])
    return found


def feature_map_files(embedded: list[dict], item_shards: list[list[Item]], pair_shards: list[list[Pair]]) \
        -> list[list[str]] | list[None]:
    """For each shard of pairs, the embed shards' feature-map files holding its images (None when not kept)."""
    if not embedded or not embedded[0].get("feature_maps_path"):
        return [None] * len(pair_shards)
    where = {item.image_id: output["feature_maps_path"]
             for output, shard in zip(embedded, item_shards, strict=True) for item in shard}
    return [sorted({where[item.image_id] for pair in shard for item in (pair.query, pair.retrieved)})
            for shard in pair_shards]


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
    return (item.image_id, item.relative_path, file_stamp(item.path), item.label, item.split, item.size, item.box)


def localize_key(model_spec: str, pairs: list[Pair], method: str, config: LocalizationConfig) -> str:
    return content_key("localize", model_fingerprint(model_spec), code_version(), method,
                       [(p.pair_id, item_signature(p.query), item_signature(p.retrieved)) for p in pairs],
                       list(config.thresholds), config.connectivity, list(config.sides), config.resolution,
                       config.precision, config.feature_map_cache)


@task(name="localize-shard", tags=["gpu"], cache_policy=NO_CACHE)
def localize_shard(out: str, model_spec: str, pairs: list[Pair], index: int, config: LocalizationConfig,
                   feature_map_files: list[str] | None = None) -> dict:
    """Maps and threshold sweep of one shard of pairs -> per method, one Parquet file of rows and one of the
    raw feature-resolution maps (``localization_maps``, for the review dashboard) (+ errors).

    Methods whose file already exists (and reads back whole) are not recomputed. With
    ``config.feature_map_cache`` ``float16``/``float32``, the pairs are explained from the feature maps the embed
    shards kept (``feature_map_files``: the files holding this shard's images), so no image is decoded and no
    backbone runs here; with ``"none"``, the images are decoded and the backbone runs once for all the missing
    methods.
    """
    if config.feature_map_cache != "none" and feature_map_files is None:
        raise ArgumentError("feature_map_files", f"feature_map_cache is {config.feature_map_cache!r}: give the "
                                                 f"embed shards' feature-map files of this shard's images")
    store = ResultsLocation(out)
    paths = {m: f"shards/localization/{m}/shard-{index:04d}-{localize_key(model_spec, pairs, m, config)}.parquet"
             for m in config.methods}
    maps_paths = {m: path.replace("shards/localization/", "shards/maps/", 1) for m, path in paths.items()}
    errors_path = f"shards/errors/localize-{index:04d}-{content_key(sorted(paths.values()))}.parquet"
    cache = ShardCache(store, "localize")
    missing = [m for m in paths if not all([cache.usable(paths[m], "localization_items"),
                                            cache.usable(maps_paths[m], "localization_maps")])]
    if cache.usable(errors_path, "errors") and not missing:
        return {"paths": paths, "maps_paths": maps_paths, "errors_path": errors_path, "computed": [],
                "seconds": 0.0}
    started = time.perf_counter()
    device = resolve_device(config.device)
    model = cached_model(model_spec, model_fingerprint(model_spec), device)
    stored: list[dict] = []  # the raw maps of every scored item (localization_maps)
    maps = None
    if feature_map_files is not None:
        maps = read_feature_maps(out, feature_map_files, {i.image_id for p in pairs for i in (p.query, p.retrieved)})
    rows, errors = localize_pairs(model, pairs, methods=tuple(missing), thresholds=config.thresholds,
                                  connectivity=config.connectivity,
                                  batch_size=config.batch_size or default_batch_size(device), device=device,
                                  sides=config.sides, resolution=config.resolution, feature_maps=maps,
                                  precision=config.precision, maps_out=stored)
    # errors first: a shard counts as finished only once every method file exists
    store.write_table(errors_path, "errors", _errors_frame(errors + cache.repairs))
    frame, map_frame = pd.DataFrame(rows), pd.DataFrame(stored)
    for method in missing:  # the maps first: the rows file is what marks a method's shard as done
        store.write_table(maps_paths[method], "localization_maps",
                          map_frame[map_frame["method"] == method] if len(map_frame) else map_frame)
        store.write_table(paths[method], "localization_items", frame[frame["method"] == method] if len(frame)
                          else frame)
    return {"paths": paths, "maps_paths": maps_paths, "errors_path": errors_path, "computed": missing,
            "seconds": time.perf_counter() - started}
