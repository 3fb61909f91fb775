"""Cross-view orientation (paper Section VII-A, Figs. 8 and 9) as a Prefect flow.

Reads top to bottom as the experiment: load the cross-view pairs of a split -> give each pair its angles (a
list, or a seeded uniform draw per pair) -> rotate, explain and estimate in shards (every estimator, every
overall map) -> tables, Fig. 9, Fig. 8, manifest, catalog row and artifacts. Everything the run depends on is
its :class:`~tasks.configs.OrientationConfig`.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from tasks import progress
from tasks.cluster import task_runner
from tasks.configs import OrientationConfig, as_config
from tasks.orientation import estimate_shard, load_crossview_dataset, pairs_to_evaluate, rotations_of
from tasks.orientation_summary import orientation_markdown, summarise_orientation
from tasks.runs import start_run
from tasks.sharding import shards


@flow(name="evaluate_orientation", log_prints=True,
      task_runner=task_runner(""))  # in this process (EML_TASK_WORKERS threads), as tasks.cluster runs ""
def evaluate_orientation(config: OrientationConfig = OrientationConfig()) -> dict:
    started = time.perf_counter()
    config = as_config(OrientationConfig, config)
    config.check_inputs()  # on the machine that runs the flow: files, folders, device
    logger = get_run_logger()
    run = start_run("orientation", config.out)  # its own folder; shards cached beside, shared by every run
    cache = run.cache.uri

    split = config.split_name
    data = load_crossview_dataset(config.dataset, None if config.dataset.startswith("cvact:") else (split,))
    pairs, selection_errors = pairs_to_evaluate(data, split, config.max_pairs)
    rotations = rotations_of(pairs, config)
    logger.info(f"{data.name}: {len(pairs)} pairs of split {split} x {config.random_rotations or len(config.rotations)}"
                f" angles, {len(data.errors)} load problems")

    pair_shards = shards(pairs, config.shard_size)
    shard_rotations = [{p.pair_id: rotations[p.pair_id] for p in shard} for shard in pair_shards]
    estimated = progress.results(estimate_shard.map(unmapped(cache), unmapped(config.model), pair_shards,
                                                    shard_rotations, range(len(pair_shards)), unmapped(config)),
                                 "orientation shards")
    logger.info(f"{len(pair_shards)} shards; {sum(s['computed'] for s in estimated)} computed, the rest resumed "
                f"from {cache}")

    result = summarise_orientation(config, run, data, pairs, rotations, selection_errors, estimated, started)
    _artifacts(result, data.name)
    return result


def _artifacts(result: dict, dataset_name: str) -> None:
    create_table_artifact(
        key="orientation-summary",
        table=[{"overall_map": r["overall_map"], "method": r["method"],
                "within_3_5_percent": round(r["within_3_5"] * 100, 2),
                "median_abs_error": round(r["median_abs_error"], 2), "pairs": int(r["count"])}
               for _, r in result["summary"].iterrows()],
        description=f"Fig. 9: orientation errors per method on {dataset_name}",
    )
    create_markdown_artifact(key="orientation-report", markdown=orientation_markdown(result, dataset_name),
                             description="Cross-view orientation (paper Section VII-A)")
    create_link_artifact(key="orientation-results", link=result["location"], link_text="results folder",
                         description="Parquet tables, figures and manifest of this run")
