"""Prefect tasks of the faithfulness evaluation: choose the pairs, evaluate shards of pairs (deletion / insertion
curves, point-specific drops, cascading randomization), then the run's tables, figures and manifest.

The maths is in :mod:`eml_core.faithfulness` and :mod:`eml_core.sanity`; these tasks only shard, cache and
write. A shard's results are cached in the results location under a key hashing the checkpoint, the code
version, the pairs' files and every setting that changes a number, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import copy
import time

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.datasets import Dataset, ErrorRecord, Item
from eml_core.faithfulness import (
    ImagePair,
    count_forward_passes,
    evaluate_faithfulness,
    evaluate_point_faithfulness,
    most_faithful,
    summarise_faithfulness,
)
from eml_core.faithfulness_figures import curves_figure, sanity_figure
from eml_core.models import resolve_device
from eml_core.results import ResultsLocation, resolve_run
from eml_core.retrieval import Pair, embed_items, same_class_pairs
from eml_core.sanity import evaluate_sanity, sanity_verdicts, summarise_sanity
from eml_core.tables import frame
from tasks.configs import FaithfulnessConfig
from tasks.localization import cached_model
from tasks.provenance import code_version, content_key, file_stamp, model_fingerprint, outcome, run_header, software
from tasks.runs import Run, finish_run
from tasks.shard_cache import ShardCache

SHARD_TABLES = ("faithfulness_curves", "faithfulness_points", "sanity")
TABLES = ("faithfulness_curves", "faithfulness_points", "faithfulness_summary", "sanity", "sanity_summary", "errors")


def _records(errors: list[ErrorRecord]) -> pd.DataFrame:
    return pd.DataFrame([e.to_dict() for e in errors], columns=list(ErrorRecord.__dataclass_fields__))


def choose_pairs(pairs: list[Pair], count: int) -> list[Pair]:
    """At most ``count`` pairs: the first pair (by query image id) of each class in label order, then, if
    classes run out, the remaining pairs in the same order. Deterministic, and spread over classes."""
    ordered = sorted(pairs, key=lambda p: (p.query.label, p.query.image_id))
    first: list[Pair] = []
    rest: list[Pair] = []
    seen: set[int] = set()
    for pair in ordered:
        (rest if pair.query.label in seen else first).append(pair)
        seen.add(pair.query.label)
    return (first + rest)[:count]


@task(name="faithfulness-pairs", tags=["gpu"], cache_policy=NO_CACHE)
def faithfulness_pairs(config: FaithfulnessConfig, data: Dataset) -> tuple[list[ImagePair], list[ErrorRecord]]:
    """The pairs to evaluate: those of a localization run (looked up in the dataset), or the dataset's
    ``split`` paired within classes by the model's embeddings; at most ``config.pairs``."""
    if config.localization_run is not None:
        return _pairs_of_localization_run(config, data)
    items = [item for item in data.items if item.split == config.split]
    device = resolve_device(config.device)
    model = cached_model(config.model, model_fingerprint(config.model), device)
    kept, embeddings, errors = embed_items(model, items, device=device, stage="faithfulness_pairs")
    if not kept:
        return [], errors + [ErrorRecord("faithfulness_pairs", None, data.root, None,
                                         f"no readable image in split {config.split!r}")]
    pairs, pair_errors = same_class_pairs(kept, embeddings, mode=config.pairing, seed=config.seed)
    chosen = choose_pairs(pairs, config.pairs)
    return [ImagePair(p.pair_id, p.query.path, p.retrieved.path) for p in chosen], errors + pair_errors


def _pairs_of_localization_run(config: FaithfulnessConfig, data: Dataset):
    assert config.localization_run is not None
    run = resolve_run(config.localization_run, "localization")
    items = run.read_table("localization_items.parquet", "localization_items")
    queries = items[items["side"] == "query"].drop_duplicates("pair_id")[["pair_id", "image_id", "partner_id"]]
    by_id: dict[str, Item] = {item.image_id: item for item in data.items}
    found: list[Pair] = []
    errors: list[ErrorRecord] = []
    for pair_id, image_id, partner_id in queries.itertuples(index=False):
        missing = [i for i in (image_id, partner_id) if i not in by_id]
        if missing:
            errors.append(ErrorRecord("faithfulness_pairs", str(pair_id), run.location_of("localization_items.parquet"),
                                      None, f"image {', '.join(missing)} of this pair is not in {config.dataset}"))
            continue
        found.append(Pair(str(pair_id), by_id[image_id], by_id[partner_id], float("nan")))
    chosen = choose_pairs(found, config.pairs)
    return [ImagePair(p.pair_id, p.query.path, p.retrieved.path) for p in chosen], errors


def shard_key(model_spec: str, pairs: list[ImagePair], config: FaithfulnessConfig) -> str:
    """Everything that decides a shard's numbers (not the batch size: results do not depend on it)."""
    return content_key("faithfulness", model_fingerprint(model_spec), code_version(),
                       [(p.pair_id, p.query, file_stamp(p.query), p.retrieved, file_stamp(p.retrieved)) for p in pairs],
                       list(config.methods), list(config.removals), list(config.steps), list(config.sides),
                       config.points_per_pair, config.region_fraction, config.sanity, config.seed)


@task(name="faithfulness-shard", tags=["gpu"], cache_policy=NO_CACHE)
def faithfulness_shard(out: str, pairs: list[ImagePair], index: int, config: FaithfulnessConfig) -> dict:
    """Curves, point-specific drops and sanity rows of one shard of pairs -> one Parquet file per table (+ its
    errors) in ``shards/faithfulness/``; skipped when all four are there and read back whole.

    The perturbed images of every method, reference, step and side of the shard go through the model in
    batches of ``config.batch_size``; the forward passes and images are counted (the cost of the shard)."""
    store = ResultsLocation(out)
    key = shard_key(config.model, pairs, config)
    paths = {name: f"shards/faithfulness/{name}/shard-{index:04d}-{key}.parquet" for name in SHARD_TABLES}
    errors_path = f"shards/errors/faithfulness-{index:04d}-{key}.parquet"
    cache = ShardCache(store, "faithfulness")
    usable = [cache.usable(path, name) for name, path in paths.items()] + [cache.usable(errors_path, "errors")]
    if all(usable):
        return {"paths": paths, "errors_path": errors_path, "computed": False, "pairs": len(pairs),
                "forward_calls": 0, "images": 0, "seconds": 0.0}
    started = time.perf_counter()
    device = resolve_device(config.device)
    # a copy per shard: randomization (sanity) and the forward counter must not touch a model other shards use
    model = copy.deepcopy(cached_model(config.model, model_fingerprint(config.model), device))
    tables: dict[str, list[dict]] = {name: [] for name in SHARD_TABLES}
    errors: list[ErrorRecord] = []
    with count_forward_passes(model) as count:
        rows, problems = evaluate_faithfulness(model, pairs, methods=config.methods, removals=config.removals,
                                               steps=config.steps, sides=config.sides, batch_size=config.batch_size,
                                               seed=config.seed)
        tables["faithfulness_curves"] += rows
        errors += problems
        if config.points_per_pair:
            for removal in config.removals:
                rows, problems = evaluate_point_faithfulness(
                    model, pairs, methods=config.methods, removal=removal, points_per_pair=config.points_per_pair,
                    region_fraction=config.region_fraction, batch_size=config.batch_size, seed=config.seed)
                tables["faithfulness_points"] += rows
                errors += problems
        if config.sanity:
            rows, problems = evaluate_sanity(model, pairs, methods=config.methods, sides=config.sides,
                                             seed=config.seed)
            tables["sanity"] += rows
            errors += problems
    # errors first: a shard counts as finished only once every table file exists
    store.write_table(errors_path, "errors", _records(errors + cache.repairs))
    for name, path in paths.items():
        store.write_table(path, name, tables[name])
    return {"paths": paths, "errors_path": errors_path, "computed": True, "pairs": len(pairs),
            "forward_calls": count.calls, "images": count.images, "seconds": time.perf_counter() - started}


def _concat(cache: ResultsLocation, paths: list[str], name: str) -> pd.DataFrame:
    parts = [cache.read_table(path, name) for path in paths]
    parts = [p for p in parts if len(p)]
    return frame(name, pd.concat(parts, ignore_index=True) if parts else [])


@task(name="summarise-faithfulness", cache_policy=NO_CACHE)
def summarise_faithfulness_run(config: FaithfulnessConfig, run: Run, data: Dataset, pairs: list[ImagePair],
                               pair_errors: list[ErrorRecord], outputs: list[dict], started: float) -> dict:
    """The run's tables (curves, points, summary, sanity, sanity summary, errors), figures and manifest (last),
    from the shard cache; then the run is registered (``latest`` pointer, catalog row)."""
    cache, store = run.cache, run.location
    loaded = {name: _concat(cache, [o["paths"][name] for o in outputs], name) for name in SHARD_TABLES}
    curves, points, sanity = (loaded[name] for name in SHARD_TABLES)
    summary = summarise_faithfulness(curves.to_dict("records"), points.to_dict("records"), seed=config.seed)
    sanity_summary = summarise_sanity(sanity.to_dict("records"), seed=config.seed)
    verdicts = sanity_verdicts(sanity_summary) if sanity_summary else []
    best = most_faithful(summary)

    error_frames = [_records(data.errors + pair_errors)] + [cache.read_table(o["errors_path"]) for o in outputs]
    errors = frame("errors", pd.concat([f for f in error_frames if len(f)], ignore_index=True)
                   if any(len(f) for f in error_frames) else [])
    tables = {"faithfulness_curves": curves, "faithfulness_points": points,
              "faithfulness_summary": frame("faithfulness_summary", summary), "sanity": sanity,
              "sanity_summary": frame("sanity_summary", sanity_summary), "errors": errors}
    for name in TABLES:
        store.write_table(f"{name}.parquet", name, tables[name])

    figures = []
    if len(curves):
        store.write_bytes("figures/faithfulness_curves.png", curves_figure(curves.to_dict("records")))
        figures.append("figures/faithfulness_curves.png")
    if sanity_summary:
        store.write_bytes("figures/sanity.png", sanity_figure(sanity_summary))
        figures.append("figures/sanity.png")

    computed = [o for o in outputs if o["computed"]]
    seconds = sum(o["seconds"] for o in computed)
    cost = {"shards_computed": len(computed), "pairs_computed": sum(o["pairs"] for o in computed),
            "forward_calls": sum(o["forward_calls"] for o in computed),
            "images_forwarded": sum(o["images"] for o in computed), "shard_seconds": round(seconds, 3),
            "pairs_per_second": (sum(o["pairs"] for o in computed) / seconds) if seconds > 0 else None}
    fingerprint = model_fingerprint(config.model)
    manifest = {
        "kind": "evaluate_faithfulness",
        "run": run_header(run, cache.uri),
        "config": config.to_dict(),
        "seeds": {"orderings": config.seed, "bootstrap": config.seed},
        **software(),
        "dataset": {"name": data.name, "root": data.root, "items": len(data.items), "fingerprint": data.fingerprint()},
        "checkpoint": {"spec": config.model, "sha256": fingerprint},
        "pairs": [p.pair_id for p in pairs],
        "cost": cost,
        "most_faithful": best,
        "sanity_verdicts": verdicts,
        "shards": [p for o in outputs for p in o["paths"].values()],
        **outcome(TABLES, errors, started, figures),
    }
    store.write_json("manifest.json", manifest)
    headline: dict[str, float] = {}
    for row in summary:
        for measure in ("deletion_auc", "insertion_auc", "point_ratio"):
            if pd.notna(row[measure]):
                headline[f"{measure}/{row['removal']}/{row['method']}"] = float(row[measure])
    headline.update({f"sanity_passes/{v['method']}": float(v["passes"]) for v in verdicts})
    catalog_row = finish_run(run, manifest, dataset=config.dataset, model=config.model,
                             checkpoint_sha256=fingerprint, headline=headline)
    return {"summary": tables["faithfulness_summary"], "sanity_summary": tables["sanity_summary"],
            "most_faithful": best, "sanity_verdicts": verdicts, "errors": errors, "manifest": manifest,
            "location": store.location_of(""), "run_id": run.run_id, "catalog": catalog_row}


def markdown_report(result: dict) -> str:
    """The summary of a faithfulness run for the terminal and the Prefect UI."""
    lines = [f"Faithfulness run {result['run_id']}: {len(result['manifest']['pairs'])} pairs -> {result['location']}",
             "", "| removal | method | deletion AUC (lower) | insertion AUC (higher) | point ratio (higher) |",
             "|---|---|---|---|---|"]
    for _, row in result["summary"].iterrows():
        ratio = f"{row['point_ratio']:.3f}" if pd.notna(row["point_ratio"]) else "-"  # no point-specific maps
        lines.append(f"| {row['removal']} | {row['method']} | {row['deletion_auc']:.4f} | {row['insertion_auc']:.4f} "
                     f"| {ratio} |")
    if result["sanity_verdicts"]:
        lines += ["", "| method | Spearman (fully randomized) | SSIM | passes sanity |", "|---|---|---|---|"]
        lines += [f"| {v['method']} | {v['spearman']:.3f} | {v['ssim']:.3f} | {'yes' if v['passes'] else 'NO'} |"
                  for v in result["sanity_verdicts"]]
    cost = result["manifest"]["cost"]
    lines += ["", f"cost: {cost['forward_calls']} forward passes ({cost['images_forwarded']} images) for "
                  f"{cost['pairs_computed']} pairs computed this run"
                  + (f", {cost['pairs_per_second']:.3f} pairs/s" if cost["pairs_per_second"] else ""),
              f"errors: {result['manifest']['errors']}, warnings: {result['manifest']['warnings']}"]
    return "\n".join(lines)

