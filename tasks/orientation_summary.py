"""The end of an orientation run: tables, Fig. 9 and Fig. 8, and the manifest, from the shard files."""

from __future__ import annotations

import re

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.crossview_data import CrossViewDataset, CrossViewPair
from eml_core.datasets import ErrorRecord
from eml_core.errors import EmlError
from eml_core.models import resolve_device
from eml_core.orientation import orientation_histogram, orientation_summary
from eml_core.orientation_figures import histogram_png, render_example
from eml_core.tables import frame
from tasks.configs import OrientationConfig
from tasks.orientation import cached_crossview_model
from tasks.provenance import model_fingerprint, outcome, run_header, software
from tasks.runs import Run, finish_run

TABLES = ("orientation_items", "orientation_summary", "orientation_histogram", "errors")
ITEM_ORDER = ["pair_id", "rotation", "overall_map", "method"]
HEADLINE_METRICS = ("within_3_5", "median_abs_error")


@task(name="summarise-orientation", cache_policy=NO_CACHE)
def summarise_orientation(config: OrientationConfig, run: Run, dataset: CrossViewDataset, pairs: list[CrossViewPair],
                          rotations: dict[str, list[float]], selection_errors: list[ErrorRecord],
                          shard_outputs: list[dict], started: float) -> dict:
    """The run's tables, figures and manifest (written last) in the run's own folder, from the shard cache;
    then the run is registered (``latest`` pointer, catalog row)."""
    cache, store = run.cache, run.location
    parts = [cache.read_table(o["path"]) for o in shard_outputs]
    items = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    items = frame("orientation_items", [] if items is None else
                  items.sort_values(ITEM_ORDER, kind="stable").reset_index(drop=True))
    summary = frame("orientation_summary", orientation_summary(items))
    histogram = frame("orientation_histogram", orientation_histogram(items))

    error_frames = [pd.DataFrame([e.to_dict() for e in dataset.errors + selection_errors])]
    error_frames += [cache.read_table(o["errors_path"]) for o in shard_outputs]
    errors = frame("errors", pd.concat([f for f in error_frames if len(f)], ignore_index=True)
                   if any(len(f) for f in error_frames) else [])

    for name, table in zip(TABLES, (items, summary, histogram, errors), strict=True):
        store.write_table(f"{name}.parquet", name, table)

    figures = _figures(config, store, histogram, items, pairs, rotations, dataset.name)
    fingerprint = model_fingerprint(config.model)
    computed = [o for o in shard_outputs if o["computed"]]
    seconds = sum(o["seconds"] for o in computed)
    explained = sum(o["explained"] for o in computed)
    manifest = {
        "kind": "evaluate_orientation",
        "run": run_header(run, cache.uri),
        "config": config.to_dict(),
        "seeds": {"rotations": config.seed if not config.rotations else None},
        **software(),
        "dataset": {"name": dataset.name, "root": dataset.root, "pairs": len(dataset.pairs),
                    "split": config.split_name, "fingerprint": dataset.fingerprint()},
        "checkpoint": {"spec": config.model, "sha256": fingerprint},
        "pairs": len(pairs),
        "rotated_pairs": sum(len(rotations[p.pair_id]) for p in pairs),
        "rotations": ({"angles": list(config.rotations)} if config.rotations else
                      {"random_per_pair": config.random_rotations, "seed": config.seed}),
        "shards": [o["path"] for o in shard_outputs],
        "shards_computed_this_run": len(computed),
        # what this run computed (resumed shards cost nothing): rotated pairs explained and estimated per second
        "throughput": {"rotated_pairs": explained, "seconds": round(seconds, 3),
                       "rotated_pairs_per_second": round(explained / seconds, 4) if seconds > 0 else None},
        **outcome(TABLES, errors, started, figures),
    }
    store.write_json("manifest.json", manifest)
    catalog_row = finish_run(run, manifest, dataset=config.dataset, split_rule=config.split_name, model=config.model,
                             checkpoint_sha256=fingerprint, headline=headline(summary, config))
    return {"items": items, "summary": summary, "histogram": histogram, "errors": errors, "manifest": manifest,
            "location": store.location_of(""), "run_id": run.run_id, "catalog": catalog_row, "figures": figures}


def headline(summary: pd.DataFrame, config: OrientationConfig) -> dict[str, float]:
    """``within_3_5/<method>`` and ``median_abs_error/<method>`` with the first overall map (the paper's
    Decomposition by default); ``<metric>/<overall map>/<method>`` for any other."""
    found: dict[str, float] = {}
    for _, row in summary.iterrows():
        prefix = "" if row["overall_map"] == config.overall_maps[0] else f"{row['overall_map']}/"
        for metric in HEADLINE_METRICS:
            found[f"{metric}/{prefix}{row['method']}"] = float(row[metric])
    return found


def _figures(config: OrientationConfig, store, histogram: pd.DataFrame, items: pd.DataFrame,
             pairs: list[CrossViewPair], rotations: dict[str, list[float]], dataset_name: str) -> list[str]:
    """Fig. 9 per overall map (overall vs point-specific histograms side by side) and Fig. 8 for the first
    ``examples`` evaluated pairs at their first angle."""
    figures: list[str] = []
    if not len(items):
        return figures
    rotated = items[["pair_id", "rotation"]].drop_duplicates().shape[0]
    for overall_map in config.overall_maps:
        name = f"figures/histogram_{overall_map}.png"
        store.write_bytes(name, histogram_png(histogram, overall_map,
                                              title=f"{dataset_name}, split {config.split_name}: {rotated} rotated "
                                                    f"pairs"))
        figures.append(name)
    evaluated = set(items["pair_id"])
    device = resolve_device(config.device)
    model = cached_crossview_model(config.model, model_fingerprint(config.model), device)
    for pair in [p for p in pairs if p.pair_id in evaluated][:config.examples]:
        angle = rotations[pair.pair_id][0]
        try:
            png = render_example(model, pair, angle, config.overall_maps[0], config.fill, device)
        except (EmlError, RuntimeError):  # the file changed since its shard ran; its problem is in the errors
            continue
        name = f"figures/example_{re.sub(r'[^A-Za-z0-9_.-]', '_', pair.pair_id)}_{angle:g}.png"
        store.write_bytes(name, png)
        figures.append(name)
    return figures


def orientation_markdown(result: dict, dataset_name: str) -> str:
    """The summary (Fig. 9's shares) as markdown, with where the results are."""
    summary, errors = result["summary"], result["errors"]
    manifest = result["manifest"]
    lines = [f"# Cross-view orientation on {dataset_name} (split {manifest['dataset']['split']})", "",
             f"Results: `{result['location']}`", "",
             f"{manifest['pairs']} pairs, {manifest['rotated_pairs']} rotated pairs; chance within +-3.5 degrees "
             f"is 7/360 = 1.9%.", "",
             "| overall map | method | within +-3.5 | within +-10 | within +-30 | median abs error | mean abs error "
             "| n | flagged |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for _, row in summary.iterrows():
        lines.append(f"| {row['overall_map']} | {row['method']} | {row['within_3_5']:.1%} | {row['within_10']:.1%} | "
                     f"{row['within_30']:.1%} | {row['median_abs_error']:.2f} | {row['mean_abs_error']:.2f} | "
                     f"{row['count']} | {row['flagged']} |")
    throughput = manifest["throughput"]
    if throughput["rotated_pairs_per_second"]:
        lines += ["", f"Computed this run: {throughput['rotated_pairs']} rotated pairs in "
                      f"{throughput['seconds']:.1f} s ({throughput['rotated_pairs_per_second']:.2f} per second, every "
                      f"method)."]
    lines += ["", f"Figures: {', '.join(result['figures']) or 'none'}",
              f"Errors: {int((errors['severity'] == 'error').sum())}, warnings: "
              f"{int((errors['severity'] == 'warning').sum())} (see errors.parquet)"]
    return "\n".join(lines)
