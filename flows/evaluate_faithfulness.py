"""Faithfulness and sanity of similarity explanations (docs/faithfulness.md) as a Prefect flow.

Reads top to bottom as the experiment: load the dataset -> choose the pairs (those of a localization run, or the
dataset's split paired within classes) -> in shards: deletion / insertion curves on the similarity, the
point-specific drops, cascading model randomization -> tables, figures, manifest and artifacts. Everything the
run depends on is its :class:`~tasks.configs.FaithfulnessConfig`.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from tasks import progress
from tasks.cluster import task_runner
from tasks.configs import FaithfulnessConfig, as_config
from tasks.faithfulness import faithfulness_pairs, faithfulness_shard, markdown_report, summarise_faithfulness_run
from tasks.localization import load_dataset
from tasks.runs import start_run
from tasks.sharding import shards


@flow(name="evaluate_faithfulness", log_prints=True,
      task_runner=task_runner(""))  # in this process (EML_TASK_WORKERS threads), as tasks.cluster runs ""
def evaluate_faithfulness(config: FaithfulnessConfig = FaithfulnessConfig()) -> dict:
    started = time.perf_counter()
    config = as_config(FaithfulnessConfig, config)
    config.check_inputs()  # on the machine that runs the flow: files, folders, device
    logger = get_run_logger()
    run = start_run("faithfulness", config.out)

    data = load_dataset(config.dataset, config.split_rule)
    pairs, pair_errors = faithfulness_pairs(config, data)
    logger.info(f"{data.name}: {len(pairs)} pairs to evaluate, {len(data.errors) + len(pair_errors)} problems")

    pair_shards = shards(pairs, config.shard_size)
    outputs = progress.results(faithfulness_shard.map(run.cache.uri, pair_shards, range(len(pair_shards)),
                                                      unmapped(config)), "faithfulness shards")
    logger.info(f"{len(pair_shards)} shards; {sum(bool(o['computed']) for o in outputs)} computed, "
                f"the rest resumed from {run.cache.uri}")

    result = summarise_faithfulness_run(config, run, data, pairs, pair_errors, outputs, started)
    create_markdown_artifact(key="faithfulness-report", markdown=markdown_report(result),
                             description="deletion / insertion AUCs, point-specific ratio, sanity verdicts")
    create_link_artifact(key="faithfulness-results", link=result["location"], link_text="results folder",
                         description="Parquet tables, figures and manifest of this run")
    return result
