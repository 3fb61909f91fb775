"""The retrieval benchmarks (:mod:`eml_core.retrieval_benchmark`) as Prefect tasks: composite two-object images
(precision@k and mAP of every region method) and Market-1501's re-identification rules (CMC and mAP).

The gallery goes into an index in the run kind's cache folder, keyed by the model, the benchmark's data and the
code version, so a second run with the same model reuses it (embedding nothing).
"""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.datasets import ErrorRecord, Item
from eml_core.models import resolve_device
from eml_core.tables import frame
from tasks.configs import RetrievalBenchmarkConfig
from tasks.provenance import code_version, content_key, model_fingerprint, outcome, run_header, software
from tasks.retrieval import absolute_spec, headline_of, load_model, montage_name, opened_index
from tasks.runs import Run, finish_run


def composite_config(config: RetrievalBenchmarkConfig):
    from eml_core.retrieval_benchmark import CompositeConfig

    return CompositeConfig(gallery_images=config.gallery_images, query_images=config.query_images, seed=config.seed)


@task(name="benchmark-gallery", cache_policy=NO_CACHE)
def benchmark_gallery(config: RetrievalBenchmarkConfig, run: Run) -> dict:
    """The benchmark's gallery items, their root, and the index location (in the run kind's cache folder)."""
    from dataclasses import asdict

    if config.benchmark == "composite":
        from eml_core.retrieval_benchmark import ensure_composites, load_composites

        composites = composite_config(config)
        benchmark = load_composites(ensure_composites(config.data, composites))
        items: list[Item] = benchmark.gallery_items()
        root, described, errors = benchmark.root, asdict(composites), []
    else:
        from eml_core.dataset_specs import dataset_from_spec

        assert config.dataset is not None
        data = dataset_from_spec(config.dataset)
        items, root, errors = data.split("gallery"), data.root, list(data.errors)
        described = {"dataset": config.dataset, "fingerprint": data.fingerprint()}
    key = content_key("benchmark-index", model_fingerprint(config.model), config.benchmark, described, code_version())
    return {"items": items, "root": root, "described": described, "errors": errors,
            "location": run.cache.child(f"indexes/{config.benchmark}-{key}").uri}


@task(name="evaluate-retrieval-benchmark", tags=["gpu"], cache_policy=NO_CACHE)
def evaluate_benchmark(config: RetrievalBenchmarkConfig, index_location: str, root: str) -> dict:
    """Rank every benchmark query by every method against the index; ``retrieval_rankings`` (top k) and
    ``retrieval_eval`` rows, and the errors."""
    from eml_core.retrieval_benchmark import (
        PRECISION_KS,
        evaluate_composites,
        evaluate_market1501,
        load_composites,
    )

    device = resolve_device(config.device)
    model = load_model(config.model, device)
    index = opened_index(index_location)
    if config.benchmark == "composite":
        from eml_core.region_retrieval import RETRIEVAL_METHODS

        benchmark = load_composites(root)
        ks = tuple(sorted(set(PRECISION_KS) | {config.k}))
        methods = config.methods or tuple(RETRIEVAL_METHODS)
        rankings, evals, errors = evaluate_composites(model, index, benchmark, methods, ks, config.k, device,
                                                      config.batch_size)
        queries = {q.query_id: q for q in benchmark.region_queries()}
        return {"rankings": rankings, "eval": evals, "errors": errors, "queries": queries}
    from eml_core.dataset_specs import dataset_from_spec

    assert config.dataset is not None
    queries_items = dataset_from_spec(config.dataset).split("query")
    evals, result, errors = evaluate_market1501(model, queries_items, index, device, config.batch_size)
    return {"rankings": [], "eval": evals, "errors": errors, "queries": {}, "skipped": result["skipped"]}


@task(name="write-benchmark-run", cache_policy=NO_CACHE)
def write_benchmark_run(config: RetrievalBenchmarkConfig, run: Run, gallery: dict, index: dict, added: int,
                        evaluated: dict, index_errors: list[ErrorRecord], started: float) -> dict:
    """Tables, montages (the first ``montages`` query regions) and the manifest, then the catalog row."""
    from eml_core.region_retrieval import montage_for_query
    from eml_core.retrieval_benchmark import eval_table_text

    store = run.location
    rankings = frame("retrieval_rankings", evaluated["rankings"])
    evals = frame("retrieval_eval", evaluated["eval"])
    rows = [e.to_dict() for e in gallery["errors"] + index_errors + evaluated["errors"]]
    errors = frame("errors", pd.DataFrame(rows, columns=list(ErrorRecord.__dataclass_fields__)) if rows else [])
    montages = {}
    for number, query_id in enumerate(list(dict.fromkeys(rankings["query_id"]))[:config.montages], start=1):
        relative = montage_name(number, query_id)
        store.write_bytes(relative, montage_for_query(rankings, query_id, top_k=5))
        montages[query_id] = relative
    for name, table in (("retrieval_rankings", rankings), ("retrieval_eval", evals), ("errors", errors)):
        store.write_table(f"{name}.parquet", name, table)
    fingerprint = model_fingerprint(config.model)
    manifest = {
        "kind": "evaluate_retrieval",
        "run": run_header(run, run.cache.uri),
        "config": config.to_dict(), **software(),
        "benchmark": {"name": config.benchmark, **gallery["described"], "gallery": len(gallery["items"]),
                      "queries": len(evaluated["queries"]) if config.benchmark == "composite" else None,
                      "skipped_queries": evaluated.get("skipped")},
        "index": {**{k: index[k] for k in ("location", "root", "similarity", "fingerprint")}, "added_this_run": added},
        "checkpoint": {"spec": absolute_spec(config.model), "sha256": fingerprint},
        "montages": montages,
        **outcome(("retrieval_rankings", "retrieval_eval", "errors"), errors, started),
    }
    store.write_json("manifest.json", manifest)
    catalog_row = finish_run(run, manifest, dataset=config.dataset or f"composite:{config.data}", model=config.model,
                             checkpoint_sha256=fingerprint, headline=headline_of(evals))
    return {"eval": evals, "rankings": rankings, "errors": errors, "manifest": manifest,
            "text": eval_table_text(evaluated["eval"]), "location": store.location_of(""), "run_id": run.run_id,
            "catalog": catalog_row}
