"""Weakly supervised localization (paper Tables I and II) as a Prefect flow.

Reads top to bottom as the experiment: load the dataset -> embed it in shards (keeping each image's feature
map) -> pair every image with a same-class image -> explain every pair from the kept maps and sweep thresholds
in shards -> tables, figures, manifest and artifacts. Everything the run depends on is its
:class:`~tasks.configs.LocalizationConfig`.

Where the shard tasks run is ``config.cluster`` (:mod:`tasks.cluster`): the entry flow picks the task runner and
runs the experiment as a subflow on it, so a deployment chooses its cluster in its parameters like any other
setting, and the experiment's body is the same in this process and on Dask.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, unmapped

from tasks import progress
from tasks.cluster import gpu_tasks, task_runner, workers_reach_api
from tasks.configs import LocalizationConfig, as_config
from tasks.localization import (
    embed_shard,
    feature_map_files,
    load_dataset,
    localize_shard,
    make_pairs,
    read_embeddings,
)
from tasks.reports import publish_localization
from tasks.runs import start_run
from tasks.sharding import shards
from tasks.summary import summarise


@flow(name="evaluate_localization", log_prints=True)
def evaluate_localization(config: LocalizationConfig = LocalizationConfig()) -> dict:
    config = as_config(LocalizationConfig, config)
    config.check_inputs()  # on the machine that runs the flow: files, folders, device, the Dask scheduler
    with workers_reach_api(config.cluster):
        return localization_experiment.with_options(task_runner=task_runner(config.cluster))(config)


@flow(name="localization_experiment", log_prints=True)
def localization_experiment(config: LocalizationConfig) -> dict:
    started = time.perf_counter()
    logger = get_run_logger()
    run = start_run("localization", config.out)  # its own folder; shards cached beside, shared by every run
    cache = run.cache.uri

    data = load_dataset(config.dataset, config.split_rule)
    items = [item for item in data.items if item.split in config.embedded_splits]
    logger.info(f"{data.name} ({data.split_rule} split): {len(items)} images in {config.embedded_splits}, "
                f"{len(data.errors)} load problems")

    item_shards = shards(items, config.shard_size)
    with gpu_tasks(notice=logger.info) as placement:  # model shards need a GPU where the cluster has one
        embedding = embed_shard.map(cache, config.model, item_shards, range(len(item_shards)), config.device,
                                    config.batch_size, config.precision, config.feature_map_cache)
    embedded = progress.results(embedding, "embedding shards")
    embeddings = read_embeddings(cache, [e["path"] for e in embedded])
    # Recall@K covers every split in `splits`; localization (Tables I/II) only `table_splits` (default: test).
    pairs, pair_errors = make_pairs(items, embeddings, config.pairing, config.seed, config.table_splits)

    pair_shards = shards(pairs, config.shard_size)
    localized = progress.results(localize_shard.map(cache, config.model, pair_shards, range(len(pair_shards)),
                                                    unmapped(config),
                                                    feature_map_files(embedded, item_shards, pair_shards)),
                                 "localization shards")
    logger.info(f"{len(pairs)} pairs in {len(pair_shards)} shards; "
                f"{sum(bool(s['computed']) for s in localized)} computed, the rest resumed from {cache}")

    result = summarise(config, run, data, embedded, pairs, pair_errors, localized, started, placement=placement)
    publish_localization(result, data.name, config.dataset, config.out)  # scoped keys, figures, trend
    return result
