"""Embed a gallery once into an index (paper Section VII-B: the gallery's embeddings are stored and reused), as a
Prefect flow.

Reads top to bottom: load the gallery dataset -> create or open the index (same model, root and similarity) ->
find the images it does not hold yet -> embed them in shards (GPU tasks) and commit every ``commit_every``
shards -> the build's errors table and manifest in ``<index>/builds/<build id>/``. Building again with the same
images embeds nothing; with more images, only the new ones.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from tasks import progress
from tasks.cluster import task_runner
from tasks.configs import IndexBuildConfig, as_config
from tasks.localization import load_dataset
from tasks.retrieval import (
    commit_parts,
    embed_gallery_part,
    finish_index_build,
    gallery_items,
    missing_gallery_items,
    open_index,
)
from tasks.runs import new_run_id
from tasks.sharding import shards


@flow(name="index_build", log_prints=True,
      task_runner=task_runner(""))  # in this process (EML_TASK_WORKERS threads), as tasks.cluster runs ""
def index_build(config: IndexBuildConfig) -> dict:
    started = time.perf_counter()
    config = as_config(IndexBuildConfig, config)
    config.check_inputs()
    logger = get_run_logger()
    data = load_dataset(config.gallery)
    items, errors = gallery_items(data, config.splits)
    index = open_index(config.out, config.model, data.root, config.similarity, config.gallery)
    missing, missing_errors = missing_gallery_items(index["location"], items)
    errors += missing_errors
    logger.info(f"{data.name}: {len(items)} gallery images, {index['count']} already indexed, {len(missing)} to embed")

    added, embed_errors = fill_index(index, config.model, missing, config.shard_size, config.commit_every,
                                     config.device, config.batch_size)
    result = finish_index_build(config, new_run_id(), data, items, added, errors + embed_errors, started)
    logger.info(f"index {result['index']}: {result['count']} images ({added} added now); build record "
                f"{result['build']}")
    return result



def fill_index(index: dict, model: str, missing: list, shard_size: int, commit_every: int, device: str,
               batch_size: int) -> tuple[int, list]:
    """Embed ``missing`` gallery items in shards and commit them every ``commit_every`` shards (a crash loses at
    most one wave: what was committed stays). Returns ``(images added, error rows)``."""
    added, errors = 0, []
    for wave in shards(shards(missing, shard_size), commit_every):
        parts = progress.results(embed_gallery_part.map(index["location"], model, wave, index["root"], device,
                                                        batch_size), "embedding gallery shards")
        added += commit_parts(index["location"], [p["record"] for p in parts])
        errors += [error for p in parts for error in p["errors"]]
    return added, errors
