"""The retrieval benchmarks as a Prefect flow: precision@k and mAP of the region methods on composite two-object
images (the paper has a human study only), or Market-1501's re-identification rules.

Reads top to bottom: the benchmark's gallery (composites generated once, deterministic from the seed; or the
Market-1501 ``bounding_box_test`` folder) -> an index of it embedded in shards (reused by later runs of the same
model) -> every query ranked by every method and scored -> tables, montages, manifest, catalog row.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.index_build import fill_index
from tasks.cluster import task_runner
from tasks.configs import RetrievalBenchmarkConfig, as_config
from tasks.retrieval import artifact_rows, missing_gallery_items, open_index
from tasks.retrieval_benchmark import benchmark_gallery, evaluate_benchmark, write_benchmark_run
from tasks.runs import start_run


@flow(name="evaluate_retrieval", log_prints=True,
      task_runner=task_runner(""))  # in this process (EML_TASK_WORKERS threads), as tasks.cluster runs ""
def evaluate_retrieval(config: RetrievalBenchmarkConfig) -> dict:
    started = time.perf_counter()
    config = as_config(RetrievalBenchmarkConfig, config)
    config.check_inputs()
    logger = get_run_logger()
    run = start_run("retrieval_benchmark", config.out)
    gallery = benchmark_gallery(config, run)
    index = open_index(gallery["location"], config.model, gallery["root"], "cosine", config.benchmark)
    missing, errors = missing_gallery_items(index["location"], gallery["items"])
    added, embed_errors = fill_index(index, config.model, missing, config.shard_size, 16, config.device,
                                     config.batch_size)
    logger.info(f"{config.benchmark}: {len(gallery['items'])} gallery images indexed ({added} embedded now)")
    evaluated = evaluate_benchmark(config, index["location"], gallery["root"])
    result = write_benchmark_run(config, run, gallery, index, added, evaluated, errors + embed_errors, started)
    logger.info("\n" + result["text"])
    create_table_artifact(key="retrieval-benchmark", table=artifact_rows(result["eval"]),
                          description=f"{config.benchmark}: precision@k / CMC and mAP per method")
    return result
