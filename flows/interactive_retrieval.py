"""Interactive retrieval by region (paper Section VII-B, Figs. 10, 13-15) as a Prefect flow.

Reads top to bottom: open the gallery index and its model (fingerprint checked) -> read the query regions (a
CSV/Parquet file, or one image with a box or a point) -> rank them in shards (GPU tasks: the query's backbone
passes, then one matrix-vector product per method with the stored gallery) -> ``retrieval_rankings``,
per-query and mean precision@k / mAP by label, montages in the paper's layout, the manifest, and the run's
catalog row. Human studies of kind ``retrieval`` read this run.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_link_artifact, create_table_artifact

from tasks import progress
from tasks.cluster import task_runner
from tasks.configs import RetrievalConfig, as_config
from tasks.retrieval import artifact_rows, load_queries, prepare_retrieval, rank_shard, write_retrieval_run
from tasks.runs import start_run
from tasks.sharding import shards


@flow(name="interactive_retrieval", log_prints=True,
      task_runner=task_runner(""))  # in this process (EML_TASK_WORKERS threads), as tasks.cluster runs ""
def interactive_retrieval(config: RetrievalConfig) -> dict:
    started = time.perf_counter()
    config = as_config(RetrievalConfig, config)
    config.check_inputs()
    logger = get_run_logger()
    info = prepare_retrieval(config)  # the index, its model (fingerprint checked), where its images are
    run = start_run("retrieval", config.out)
    queries, query_errors = load_queries(config)
    logger.info(f"{len(queries)} queries ({len(query_errors)} rows left out) against {info['count']} gallery "
                f"images of {info['location']}")

    query_shards = shards(queries, config.shard_size)
    ranked = progress.results(rank_shard.map(run.cache.uri, unmapped(config), unmapped(info), query_shards,
                                             range(len(query_shards))), "ranking query shards")
    result = write_retrieval_run(config, run, info, queries, query_errors, ranked, started)
    _artifacts(result)
    return result


def _artifacts(result: dict) -> None:
    evals = result["eval"]
    if len(evals):
        create_table_artifact(key="retrieval-eval", table=artifact_rows(evals),
                              description="precision@k and mAP by label, per method")
    create_link_artifact(key="retrieval-results", link=result["location"], link_text="retrieval run",
                         description="retrieval_rankings, retrieval_eval, montages and manifest of this run")
