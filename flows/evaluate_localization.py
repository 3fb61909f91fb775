"""Weakly supervised localization (paper Tables I and II) as a Prefect flow.

Reads top to bottom as the experiment: load the dataset -> embed it in shards ->
pair every image with a same-class image -> explain every pair and sweep
thresholds in shards -> tables, figures, manifest and artifacts. Everything the
run depends on is its :class:`~tasks.configs.LocalizationConfig`.
"""

from __future__ import annotations

import os
import time

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from tasks import progress
from tasks.configs import LocalizationConfig, as_config
from tasks.localization import embed_shard, load_dataset, localize_shard, make_pairs, read_embeddings, shards
from tasks.runs import start_run
from tasks.summary import markdown_report, summarise

# Shard tasks run this many at a time; torch already uses every core inside one, so 1 by default.
TASK_WORKERS = int(os.environ.get("EML_TASK_WORKERS", "1"))


# Prefect's TaskRunner generic is invariant in its future type, so mypy rejects its own thread pool runner here.
@flow(name="evaluate_localization", log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=TASK_WORKERS))  # type: ignore[arg-type]
def evaluate_localization(config: LocalizationConfig = LocalizationConfig()) -> dict:
    started = time.perf_counter()
    config = as_config(LocalizationConfig, config)
    config.check_inputs()  # on the machine that runs the flow: files, folders, device
    logger = get_run_logger()
    run = start_run("localization", config.out)  # its own folder; shards cached beside, shared by every run
    cache = run.cache.uri

    data = load_dataset(config.dataset, config.split_rule)
    items = [item for item in data.items if item.split in config.embedded_splits]
    logger.info(f"{data.name} ({data.split_rule} split): {len(items)} images in {config.embedded_splits}, "
                f"{len(data.errors)} load problems")

    item_shards = shards(items, config.shard_size)
    embedded = progress.results(embed_shard.map(cache, config.model, item_shards, range(len(item_shards)),
                                                config.device), "embedding shards")
    embeddings = read_embeddings(cache, [e["path"] for e in embedded])
    # Recall@K covers every split in `splits`; localization (Tables I/II) only `table_splits` (default: test).
    pairs, pair_errors = make_pairs(items, embeddings, config.pairing, config.seed, config.table_splits)

    pair_shards = shards(pairs, config.shard_size)
    localized = progress.results(localize_shard.map(cache, config.model, pair_shards, range(len(pair_shards)),
                                                    unmapped(config)), "localization shards")
    logger.info(f"{len(pairs)} pairs in {len(pair_shards)} shards; "
                f"{sum(bool(s['computed']) for s in localized)} computed, the rest resumed from {cache}")

    result = summarise(config, run, data, embedded, pairs, pair_errors, localized, started)
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
