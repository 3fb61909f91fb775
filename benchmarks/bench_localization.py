"""Localization pipeline benchmark: sweep throughput and the share of wall time spent in orchestration.

    .venv/bin/python benchmarks/bench_localization.py --dataset cub:../shared/data/cub200 \
        --model runs/cub/model.pt [--shard-size 128] [--json out.json]

1. Sweep throughput: threshold sweeps (largest connected component + IoU) on the
   real maps of the first pairs, in map-thresholds per second, at original image size.
2. Orchestration share: the whole evaluation twice into fresh folders, once as the
   Prefect flow (ephemeral server already started, so its start-up is not counted)
   and once by calling the same step functions directly in a loop; the share is
   (flow - direct) / flow. Both runs compute every shard (nothing cached).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

for key, value in (("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"),
                   ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "1")):
    os.environ.setdefault(key, value)

import torch  # noqa: E402

from eml_core.presentation import normalised_at_image_size  # noqa: E402
from eml_core.sweep import FINE_THRESHOLDS, PAPER_THRESHOLDS, sweep_thresholds  # noqa: E402
from tasks.configs import LocalizationConfig  # noqa: E402
from tasks.localization import (  # noqa: E402
    cached_model,
    embed_shard,
    load_dataset,
    localize_shard,
    make_pairs,
    read_embeddings,
)
from tasks.provenance import model_fingerprint  # noqa: E402
from tasks.sharding import shards  # noqa: E402
from tasks.summary import summarise  # noqa: E402

THRESHOLDS = tuple(sorted(set(FINE_THRESHOLDS) | set(PAPER_THRESHOLDS)))


def direct(dataset: str, model: str, out: str, shard_size: int) -> dict:
    """The flow's steps, called as plain functions in a loop (no Prefect)."""
    started = time.perf_counter()
    config = LocalizationConfig(dataset=dataset, model=model, out=out, shard_size=shard_size, thresholds=THRESHOLDS)
    data = load_dataset.fn(dataset)
    items = [i for i in data.items if i.split in config.splits]
    embedded = [embed_shard.fn(out, model, shard, n, config.device)
                for n, shard in enumerate(shards(items, shard_size))]
    pairs, pair_errors = make_pairs.fn(items, read_embeddings(out, [e["path"] for e in embedded]), config.pairing,
                                        config.seed, config.splits)
    localized = [localize_shard.fn(out, model, shard, n, config) for n, shard in enumerate(shards(pairs, shard_size))]
    return summarise.fn(config, data, embedded, pairs, pair_errors, localized, started)


def sweep_throughput(dataset: str, model: str, pairs: int = 16) -> dict:
    from eml_core.decomposition import explain_pair
    from eml_core.images import load_image

    data = load_dataset.fn(dataset)
    net = cached_model(model, model_fingerprint(model), "cpu")
    maps = []
    for item in data.items[:pairs]:
        x = net.preprocessing(load_image(item.path).pixels)
        overall = explain_pair(net, x, x).overall("query")[0]
        maps.append((normalised_at_image_size(overall, item.size)[0], item.box))
    started = time.perf_counter()
    for normalised, box in maps:
        sweep_thresholds(normalised, box, THRESHOLDS)
    seconds = time.perf_counter() - started
    count = len(maps) * len(THRESHOLDS)
    mean_pixels = sum(m.size for m, _ in maps) / len(maps)
    return {"map_thresholds": count, "seconds": seconds, "map_thresholds_per_second": count / seconds,
            "mean_pixels_per_map": mean_pixels}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="cub:../shared/data/cub200")
    parser.add_argument("--model", required=True)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    sweep = sweep_throughput(args.dataset, args.model)
    print(f"sweep: {sweep['map_thresholds']} map-thresholds in {sweep['seconds']:.2f} s = "
          f"{sweep['map_thresholds_per_second']:.0f} map-thresholds/s "
          f"(maps of {sweep['mean_pixels_per_map']:.0f} pixels on average, 4-connectivity)")

    from prefect.testing.utilities import prefect_test_harness

    from flows.evaluate_localization import evaluate_localization

    work = tempfile.mkdtemp(prefix="eml-bench-")
    results = {}
    with prefect_test_harness(server_startup_timeout=120):
        evaluate_localization(LocalizationConfig(dataset=args.dataset, model=args.model, out=f"{work}/warmup",
                                                 shard_size=args.shard_size, methods=("decomposition",),
                                                 splits=("train",)))  # server, imports and caches warm
        for name in ("direct", "flow", "direct2", "flow2"):
            out = f"{work}/{name}"
            started = time.perf_counter()
            if name.startswith("flow"):
                result = evaluate_localization(LocalizationConfig(dataset=args.dataset, model=args.model, out=out,
                                                                  shard_size=args.shard_size))
            else:
                result = direct(args.dataset, args.model, out, args.shard_size)
            results[name] = time.perf_counter() - started
            print(f"{name:8s} {results[name]:8.1f} s  ({result['manifest']['pairs']} pairs, "
                  f"{result['manifest']['shards_computed_this_run']} shards computed)")
    shutil.rmtree(work, ignore_errors=True)
    flow_time = (results["flow"] + results["flow2"]) / 2
    direct_time = (results["direct"] + results["direct2"]) / 2
    share = (flow_time - direct_time) / flow_time
    print(f"orchestration share of wall time: {share * 100:.1f}% "
          f"(flow {flow_time:.1f} s vs direct {direct_time:.1f} s, "
          f"mean of 2 interleaved runs each; target < 15%)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"sweep": sweep, "runs_seconds": results, "orchestration_share": share}, handle, indent=2)


if __name__ == "__main__":
    main()
