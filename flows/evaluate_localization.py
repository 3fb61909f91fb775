"""Weakly supervised localization (paper Tables I and II) as a Prefect flow.

Reads top to bottom as the experiment: load the dataset -> embed it in shards ->
pair every image with its most similar same-class image -> explain every pair
and sweep thresholds in shards -> tables, figures, manifest and artifacts.
"""

from __future__ import annotations

import os
import time

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from eml_core.methods import DEFAULT_METHODS
from eml_core.models import resolve_device
from eml_core.sweep import FINE_THRESHOLDS, PAPER_THRESHOLDS
from tasks.configs import LocalizationConfig, validated
from tasks.localization import (embed_shard, load_dataset, localize_shard, make_pairs,
                                read_embeddings, shards)
from tasks.summary import markdown_report, run_summarise

# Shard tasks run this many at a time; torch already uses every core inside one, so 1 by default.
TASK_WORKERS = int(os.environ.get("EML_TASK_WORKERS", "1"))

summarise = task(name="summarise", cache_policy=NO_CACHE)(run_summarise)


@flow(name="evaluate_localization", task_runner=ThreadPoolTaskRunner(max_workers=TASK_WORKERS),
      log_prints=True)
def evaluate_localization(
    dataset: str = "synthetic",
    model: str = "mobilenet_v2:gap_fc",
    out: str = "runs/localization",
    methods: list[str] = list(DEFAULT_METHODS),
    splits: list[str] = ["train", "test"],
    localize_splits: list[str] | None = None,
    pairing: str = "nearest",
    sides: list[str] = ["query"],
    shard_size: int = 128,
    connectivity: int = 4,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    started = time.perf_counter()
    thresholds = tuple(sorted(set(FINE_THRESHOLDS) | set(PAPER_THRESHOLDS)))
    config = validated(LocalizationConfig, dataset=dataset, model=model, out=out, methods=tuple(methods),
                       splits=tuple(splits), localize_splits=localize_splits, pairing=pairing, sides=tuple(sides),
                       shard_size=shard_size, connectivity=connectivity, thresholds=thresholds, seed=seed,
                       device=device)
    resolve_device(config.device)  # on the machine that runs the flow: is the device there?
    logger = get_run_logger()

    data = load_dataset(config.dataset)
    items = [item for item in data.items if item.split in config.splits]
    logger.info(f"{data.name}: {len(items)} images in {config.splits}, {len(data.errors)} load problems")

    item_shards = shards(items, config.shard_size)
    embedded = embed_shard.map(config.out, config.model, item_shards, range(len(item_shards)), config.device).result()
    embeddings = read_embeddings(config.out, [e["path"] for e in embedded])
    # Recall@K covers every split in `splits`; localization only `localize_splits` (default: the same).
    pairs, pair_errors = make_pairs(items, embeddings, config.pairing, config.seed,
                                    config.localize_splits or config.splits)

    pair_shards = shards(pairs, config.shard_size)
    localized = localize_shard.map(config.out, config.model, pair_shards, range(len(pair_shards)),
                                   unmapped(config)).result()
    logger.info(f"{len(pairs)} pairs in {len(pair_shards)} shards; "
                f"{sum(bool(s['computed']) for s in localized)} computed, the rest resumed from {config.out}")

    result = summarise(config, data, embedded, pairs, pair_errors, localized, started)
    _artifacts(result, data.name)
    return result


def _artifacts(result: dict, dataset_name: str) -> None:
    best = result["best"]
    create_table_artifact(
        key="localization-best",
        table=[{"method": r["method"], "best_accuracy_percent": round(r["best_accuracy"] * 100, 2),
                "best_threshold": r["best_threshold"], "images": int(r["count"])} for _, r in best.iterrows()],
        description=f"Table II: best localization accuracy per method on {dataset_name}",
    )
    create_markdown_artifact(key="localization-report", markdown=markdown_report(result, dataset_name),
                             description="Tables I and II")
    create_link_artifact(key="localization-results", link=result["location"], link_text="results folder",
                         description="Parquet tables, figures and manifest of this run")
