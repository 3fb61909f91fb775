"""Whole-pipeline benchmark: the localization flow end to end against the embedding floor, in one run.

    .venv/bin/python benchmarks/bench_pipeline.py --dataset cub:../shared/data/cub200 --model mobilenet_v2:gap_fc \
        [--splits train,test] [--repeats 2] [--clusters ,local:2,tcp] [--feature-map-caches float16,none] \
        [--precisions bfloat16] [--sweep-maps 16] [--stage-pairs 64] [--json OUT.json]

What it measures, every ratio within the same run (nothing is asserted; the targets are in docs/benchmarks.md):

1. **Floor**: decode + preprocess + one forward pass of each image the flow embeds (batches of the device's
   default size, ``torch.inference_mode``), no Prefect.
2. **End to end**: the ``evaluate_localization`` flow into a fresh results root (nothing cached), the Prefect
   test server already started, once per ``--clusters`` entry: ``""`` in this process, ``local:N`` a Dask
   cluster the run starts and stops, ``tcp`` a 2-worker local cluster started once by this script and reached by
   its ``tcp://`` address (the cost without worker start-up). Images/s = images embedded / wall seconds.
   ``--feature-map-caches``: in-process runs with other ``feature_map_cache`` settings than the default, for the
   "no repeated work" comparison (time, bytes kept, tables). Floor and flows are interleaved, the order rotated in
   each repeat.
3. **Tables and maps**: each variant's tables against the default in-process run's (localization rows equal;
   Tables I/II's largest accuracy difference); the largest relative difference of the raw maps of ``--stage-pairs``
   pairs explained from float16 maps, and with the backbone autocast to each of ``--precisions``, against float32.
4. **Sweep alone**: maps/s of ``sweep_thresholds`` on real normalised maps (the decomposition maps of the first
   ``--sweep-maps`` images at their own size) for 1, 7, 100 and 1,000 thresholds, the OpenCV loop ("old") against
   the one-pass union-find sweep ("new"); both must give identical results or nothing is printed.
5. **Per-stage costs** for the cost model: decode per image (CUB, and real Market-1501 and CVUSA sample files when
   present), forward per image at each model input size, explanation per pair, presentation and sweep per map.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

for key, value in (("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"),
                   ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "1"), ("EML_NO_PROGRESS", "1")):
    os.environ.setdefault(key, value)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from eml_core.batches import default_batch_size, equal_shape_batches, load_batch  # noqa: E402
from eml_core.dataset_specs import dataset_from_spec  # noqa: E402
from eml_core.decomposition import explain_from_feature_maps  # noqa: E402
from eml_core.feature_maps import compute_feature_map  # noqa: E402
from eml_core.images import load_image  # noqa: E402
from eml_core.methods import DEFAULT_METHODS, method_maps  # noqa: E402
from eml_core.models import inference_mode_of, model_from_spec  # noqa: E402
from eml_core.presentation import normalised_at_image_size  # noqa: E402
from eml_core.retrieval import embed_items, same_class_pairs  # noqa: E402
from eml_core.sweep import FINE_THRESHOLDS, PAPER_THRESHOLDS, sweep_thresholds  # noqa: E402

GRIDS = {"1": (0.5,), "7": PAPER_THRESHOLDS, "100": FINE_THRESHOLDS,
         "1000": tuple(round(0.001 * i, 3) for i in range(1000))}
TABLES = ("localization_items", "localization_summary", "localization_best")
EXPLAIN = "explain per pair (every default method, both sides, from kept maps)"
MAPS_PER_PAIR = 2 * len(DEFAULT_METHODS)   # the paper's protocol: both sides of a pair, each default method
INPUT_SIZES = {"cub 224x224": (224, 224), "market 256x128": (256, 128), "cvusa panorama 224x1232": (224, 1232),
               "cvusa aerial 512x512": (512, 512)}

# The workloads the cost model predicts (full public datasets; counts from their official splits).
WORKLOADS = {
    # images embedded, pairs explained, maps presented, maps swept (100 thresholds), forward input sizes, decode key
    "CUB-200-2011 test set": {"images": {"cub 224x224": 5794}, "pairs": 5794, "presented": 5794 * MAPS_PER_PAIR,
                              "swept": 5794 * MAPS_PER_PAIR, "decode": {"cub": 5794}},
    "Market-1501 (query + gallery)": {"images": {"market 256x128": 3368 + 19732}, "pairs": 3368,
                                      "presented": 3368 * MAPS_PER_PAIR, "swept": 0,
                                      "decode": {"market": 3368 + 19732}},
    "CVUSA test pairs": {"images": {"cvusa panorama 224x1232": 8884, "cvusa aerial 512x512": 8884}, "pairs": 8884,
                         "presented": 8884 * MAPS_PER_PAIR, "swept": 0,
                         "decode": {"cvusa panorama": 8884, "cvusa aerial": 8884}},
}


# ---------------------------------------------------------------------------------------------
# measurements


def floor(model, items, device: str) -> dict:
    """Decode + preprocess + one forward pass of each image (the embedding floor)."""
    started = time.perf_counter()
    errors: list = []
    kept, tensors = load_batch(items, model, "floor", errors)
    decoded = time.perf_counter()
    with inference_mode_of(model), torch.inference_mode():
        for _, batch in equal_shape_batches(tensors, default_batch_size(device)):
            model(batch.to(device))
    done = time.perf_counter()
    return {"images": len(kept), "seconds": done - started, "decode_seconds": decoded - started,
            "forward_seconds": done - decoded}


def run_flow(dataset: str, model: str, out: str, shard_size: int, **options) -> tuple[float, dict]:
    from flows.evaluate_localization import evaluate_localization
    from tasks.configs import LocalizationConfig

    started = time.perf_counter()
    result = evaluate_localization(LocalizationConfig(dataset=dataset, model=model, out=out, shard_size=shard_size,
                                                      **options))
    return time.perf_counter() - started, result


def run_tables(out: str) -> dict[str, pd.DataFrame]:
    from eml_core.results import resolve_run

    store = resolve_run(out, "localization")
    return {name: store.read_table(f"{name}.parquet") for name in TABLES}


def kept_bytes(out: str) -> int:
    folder = Path(out) / "localization" / "shards" / "feature_maps"
    return sum(f.stat().st_size for f in folder.glob("*.npz")) if folder.is_dir() else 0


def compare_tables(got: dict[str, pd.DataFrame], reference: dict[str, pd.DataFrame]) -> dict:
    """Whether the localization rows are identical, and the largest accuracy difference in Tables I and II."""
    rows_equal = got["localization_items"].equals(reference["localization_items"])
    summary = got["localization_summary"].merge(reference["localization_summary"], on=["method", "threshold"])
    best = got["localization_best"].merge(reference["localization_best"], on="method")
    same_rows = len(got["localization_items"]) == len(reference["localization_items"])
    items, wanted = got["localization_items"], reference["localization_items"]
    keys = ["pair_id", "side", "method", "threshold"]
    box = ["box_x0", "box_y0", "box_x1", "box_y1"]
    joined = items.merge(wanted, on=keys, suffixes=("", "_ref"))
    return {"rows_identical": bool(rows_equal),
            "rows_matched": len(joined), "rows": len(items), "rows_reference": len(wanted),
            "boxes_differing": int((joined[box].to_numpy() != joined[[f"{b}_ref" for b in box]].to_numpy())
                                   .any(axis=1).sum()),
            "max_abs_iou_difference": _largest(joined["iou"] - joined["iou_ref"]),
            "correct_flags_differing": int((got["localization_items"]["correct"].to_numpy()
                                            != reference["localization_items"]["correct"].to_numpy()).sum())
            if same_rows else None,
            "table1_max_abs_accuracy_difference": _largest(summary["accuracy_x"] - summary["accuracy_y"]),
            "table2_max_abs_accuracy_difference": _largest(best["best_accuracy_x"] - best["best_accuracy_y"]),
            "table2_same_best_thresholds": bool((best["best_threshold_x"] == best["best_threshold_y"]).all())}


def _largest(differences: pd.Series) -> float:
    return float(differences.abs().max())


def relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| over a batch of maps (per map, then the largest)."""
    scale = want.flatten(1).abs().max(1).values.clamp_min(torch.finfo(want.dtype).tiny)
    return float(((got - want).flatten(1).abs().max(1).values / scale).max())


def map_differences(model, pairs, device: str, precisions: list[str]) -> dict:
    """Largest relative difference of each method's raw maps: explained from float16 maps, and with the backbone
    autocast to each precision, against float32."""
    q_items = [p.query for p in pairs]
    r_items = [p.retrieved for p in pairs]
    errors: list = []
    _, q_inputs = load_batch(q_items, model, "maps", errors)
    _, r_inputs = load_batch(r_items, model, "maps", errors)
    q, r = torch.stack(q_inputs).to(device), torch.stack(r_inputs).to(device)
    with inference_mode_of(model):
        maps = {p: (compute_feature_map(model, q, "q", p), compute_feature_map(model, r, "r", p))
                for p in ["float32", *precisions]}
    reference = method_maps(explain_from_feature_maps(model, *maps["float32"]))
    variants = {"float16 kept maps": (maps["float32"][0].half(), maps["float32"][1].half())}
    variants.update({f"{p} autocast backbone": maps[p] for p in precisions})
    found = {}
    for name, (map_q, map_r) in variants.items():
        explained = method_maps(explain_from_feature_maps(model, map_q, map_r))
        found[name] = {m: relative_difference(explained[m]["query"], reference[m]["query"]) for m in DEFAULT_METHODS}
        found[name]["feature_map"] = relative_difference(map_q.float(), maps["float32"][0])
    return found


def sweep_rates(maps: list[tuple[np.ndarray, tuple]], rounds: int) -> dict:
    """Maps/s of the OpenCV loop ("old") and the one-pass sweep ("new") per grid; identical results required."""
    for normalised, box in maps[:2]:  # warm-up (numba's compiled kernel loads from its cache)
        sweep_thresholds(normalised, box, FINE_THRESHOLDS)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for grid_name, grid in GRIDS.items():
            for algorithm in ("opencv", "union_find"):
                started = time.perf_counter()
                results = [sweep_thresholds(m, box, grid, algorithm=algorithm) for m, box in maps]
                times.setdefault((grid_name, algorithm), []).append(time.perf_counter() - started)
                if algorithm == "union_find":
                    reference = [sweep_thresholds(m, box, grid, algorithm="opencv") for m, box in maps]
                    if results != reference:
                        raise SystemExit(f"the two sweeps disagree on the {grid_name}-threshold grid: no numbers")
    rates = {grid: {("old" if a == "opencv" else "new"): len(maps) / statistics.median(times[(grid, a)])
                    for a in ("opencv", "union_find")} for grid in GRIDS}
    rates["new_100_over_1_cost"] = rates["1"]["new"] / rates["100"]["new"]
    return rates


def stage_costs(model, items, pairs, kept_maps: dict, device: str, decode_samples: dict[str, list[str]]) -> dict:
    """Seconds per unit of each stage the cost model adds up."""
    costs: dict[str, float] = {}
    for name, paths in decode_samples.items():
        started = time.perf_counter()
        for path in paths:
            load_image(path)
        costs[f"decode {name}"] = (time.perf_counter() - started) / len(paths)
    batch = default_batch_size(device)
    for name, size in INPUT_SIZES.items():
        count = max(2, min(batch, 16 if size[0] * size[1] <= 224 * 224 else 4))
        x = torch.randn(count, 3, *size, device=device)
        with inference_mode_of(model), torch.inference_mode():
            model(x)  # warm-up at this size
            started = time.perf_counter()
            model(x)
        costs[f"forward {name}"] = (time.perf_counter() - started) / count
    started = time.perf_counter()
    presented = []
    for start in range(0, len(pairs), 32):
        chunk = pairs[start:start + 32]
        map_q = torch.stack([kept_maps[p.query.image_id] for p in chunk])
        map_r = torch.stack([kept_maps[p.retrieved.image_id] for p in chunk])
        maps = method_maps(explain_from_feature_maps(model, map_q, map_r))
        presented.extend((maps[m][side][i], getattr(p, side)) for m in DEFAULT_METHODS for i, p in enumerate(chunk)
                         for side in ("query", "retrieved"))
    costs[EXPLAIN] = (time.perf_counter() - started) / len(pairs)
    started = time.perf_counter()
    normalised = [(normalised_at_image_size(raw, item.size)[0], item.box) for raw, item in presented]
    costs["present per map (at image size)"] = (time.perf_counter() - started) / len(presented)
    started = time.perf_counter()
    for values, box in normalised:
        sweep_thresholds(values, box, FINE_THRESHOLDS)
    costs["sweep per map (100 thresholds)"] = (time.perf_counter() - started) / len(normalised)
    costs["mean CUB image pixels"] = float(np.mean([i.size[0] * i.size[1] for i in items]))
    return costs


# ---------------------------------------------------------------------------------------------
# the cost model


def predict(costs: dict, workload: dict, gpus: int, cpu_workers: int, gpu_forward: dict[str, float] | None,
            fixed_seconds: float) -> float:
    """Predicted wall seconds of a workload from per-stage costs (docs/benchmarks.md, "Cost model").

    Embedding (decode + forward) runs in the model shards: on ``gpus`` GPU workers with the forward at
    ``gpu_forward`` seconds per image, or on ``cpu_workers`` CPU workers at the measured CPU forward when
    ``gpus == 0``; each shard decodes its own images. The explanation, presentation and sweep run in the
    localization shards on every worker (CPU work). Stages follow one another (pairing needs every embedding).
    """
    embed = 0.0
    for key, count in workload["decode"].items():
        embed += count * costs[f"decode {key}"]
    for size, count in workload["images"].items():
        per_image = gpu_forward[size] if gpus else costs[f"forward {size}"]
        embed += count * per_image
    embed /= gpus or cpu_workers
    localize = (workload["pairs"] * costs[EXPLAIN]
                + workload["presented"] * costs["present per map (at image size)"]
                + workload["swept"] * costs["sweep per map (100 thresholds)"]) / (cpu_workers + gpus)
    return fixed_seconds + embed + localize


def predictions(costs: dict, gpu_forward_224: float, gpu_machine_cpus: int) -> dict:
    """Each workload on this machine (in-process: one worker using every core) and on 1 and 8 GPUs."""
    gpu_forward = {size: gpu_forward_224 * h * w / (224 * 224) for size, (h, w) in INPUT_SIZES.items()}
    fixed = costs.get("fixed (orchestration, summary, figures) per run", 0.0)
    found = {}
    for name, workload in WORKLOADS.items():
        if not all(f"decode {key}" in costs for key in workload["decode"]):
            continue
        found[name] = {"this CPU, in-process": predict(costs, workload, 0, 1, None, fixed),
                       "1 GPU": predict(costs, workload, 1, gpu_machine_cpus, gpu_forward, fixed),
                       "8 GPUs": predict(costs, workload, 8, gpu_machine_cpus, gpu_forward, fixed)}
    return found


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cub:../shared/data/cub200")
    parser.add_argument("--model", default="mobilenet_v2:gap_fc")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clusters", default=",local:2,tcp", help='comma-separated: "" in-process, local:N, tcp')
    parser.add_argument("--feature-map-caches", default="float16,none",
                        help="in-process runs with these feature_map_cache settings besides the default")
    parser.add_argument("--precisions", default="bfloat16", help="autocast precisions whose effect is measured")
    parser.add_argument("--splits", default="train,test", help="the dataset splits embedded and localized")
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--sweep-maps", type=int, default=16)
    parser.add_argument("--sweep-rounds", type=int, default=2)
    parser.add_argument("--stage-pairs", type=int, default=64)
    parser.add_argument("--samples", default="../shared/data", help="folder with market1501/ and cvusa/ samples")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gpu-forward-ms", type=float, default=1.0,
                        help="ASSUMED GPU forward time per 224x224 image for the predictions (scaled by pixels)")
    parser.add_argument("--gpu-machine-cpus", type=int, default=32,
                        help="CPU workers beside the GPUs assumed for the 1- and 8-GPU predictions")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    from tasks.configs import LocalizationConfig

    default_cache = LocalizationConfig().feature_map_cache
    clusters = [c.strip() for c in args.clusters.split(",")]
    caches = [c for c in args.feature_map_caches.split(",") if c and c != default_cache]
    precisions = [p for p in args.precisions.split(",") if p and p != "float32"]
    report: dict = {"load_average_start": os.getloadavg(), "device": device, "threads": args.threads,
                    "dataset": args.dataset, "model": args.model}
    print(f"load average at start: {report['load_average_start']}; device {device}, {args.threads} torch threads")

    data = dataset_from_spec(args.dataset)
    splits = tuple(s for s in args.splits.split(",") if s)
    items = [i for i in data.items if i.split in splits]
    model = model_from_spec(args.model).to(device).eval()

    from prefect.testing.utilities import prefect_test_harness

    from tasks.cluster import local_cluster

    work = tempfile.mkdtemp(prefix="eml-bench-pipeline-")
    variants = [(f"cluster={c or 'in-process'}", {"cluster": c, "splits": splits}) for c in clusters]
    variants += [(f"in-process, feature_map_cache={c}", {"feature_map_cache": c, "splits": splits}) for c in caches]
    variants += [(f"in-process, precision={p}", {"precision": p, "splits": splits}) for p in precisions]
    seconds: dict[str, list[float]] = {}
    floors: list[dict] = []
    ratios: dict[str, list[float]] = {}
    tables: dict[str, dict] = {}
    bytes_kept: dict[str, int] = {}
    tcp = None
    try:
        with prefect_test_harness(server_startup_timeout=120):
            run_flow(args.dataset, args.model, f"{work}/warmup", args.shard_size, methods=("decomposition",),
                     splits=("train",))  # server, imports, numba's cached kernel
            if "tcp" in clusters:
                started = time.perf_counter()
                tcp = local_cluster(workers=2)
                report["tcp_cluster_start_seconds"] = time.perf_counter() - started
            for repeat in range(args.repeats):
                order = ["floor"] + [name for name, _ in variants]
                order = order[repeat % len(order):] + order[:repeat % len(order)]
                this_floor = None
                timed: dict[str, float] = {}
                for name in order:
                    if name == "floor":
                        this_floor = floor(model, items, device)
                        floors.append(this_floor)
                        print(f"[{repeat}] floor: {this_floor['seconds']:.1f} s "
                              f"(decode {this_floor['decode_seconds']:.1f} s, "
                              f"forward {this_floor['forward_seconds']:.1f} s), load {os.getloadavg()[0]:.2f}")
                        continue
                    options = dict(dict(variants)[name])
                    if options.get("cluster") == "tcp":
                        options["cluster"] = tcp.scheduler_address
                    out = f"{work}/{repeat}-{len(timed)}"
                    took, result = run_flow(args.dataset, args.model, out, args.shard_size, **options)
                    timed[name] = took
                    seconds.setdefault(name, []).append(took)
                    if repeat == 0:
                        tables[name] = run_tables(out)
                        bytes_kept[name] = kept_bytes(out)
                    print(f"[{repeat}] {name}: {took:.1f} s, {result['manifest']['pairs']} pairs, "
                          f"load {os.getloadavg()[0]:.2f}")
                    shutil.rmtree(out, ignore_errors=True)
                for name, took in timed.items():
                    ratios.setdefault(name, []).append(took / this_floor["seconds"])
    finally:
        if tcp is not None:
            tcp.close()
        shutil.rmtree(work, ignore_errors=True)

    images = floors[0]["images"]
    report["floor"] = floors
    report["end_to_end_seconds"] = seconds
    report["end_to_end_over_floor"] = ratios
    report["feature_map_bytes"] = bytes_kept
    print(f"\n{images} images; floor median {statistics.median(f['seconds'] for f in floors):.1f} s = "
          f"{images / statistics.median(f['seconds'] for f in floors):.1f} images/s")
    print("| run | seconds (each repeat) | images/s (median) | / floor, same repeat (each) | feature maps kept |")
    print("|---|---|---:|---|---:|")
    for name, _ in variants:
        print(f"| {name} | {', '.join(f'{s:.1f}' for s in seconds[name])} | "
              f"{images / statistics.median(seconds[name]):.1f} | {', '.join(f'{r:.2f}' for r in ratios[name])} | "
              f"{bytes_kept.get(name, 0) / 2**20:.1f} MiB |")
    in_process = variants[0][0] if clusters[0] == "" else None
    if in_process:
        report["local_over_in_process"] = {
            name: [a / b for a, b in zip(seconds[name], seconds[in_process], strict=True)]
            for name, _ in variants if name != in_process and "cluster=" in name}
        for name, values in report["local_over_in_process"].items():
            print(f"{name} / in-process, same repeat: {', '.join(f'{v:.2f}' for v in values)}")
        report["tables_against_default"] = {name: compare_tables(tables[name], tables[in_process])
                                            for name, _ in variants if name != in_process}
        for name, comparison in report["tables_against_default"].items():
            print(f"tables of {name} against the default in-process run: {comparison}")

    pairs, _ = same_class_pairs(items[:args.stage_pairs * 2], None, mode="random", seed=0)
    pairs = pairs[:args.stage_pairs]
    report["map_differences"] = map_differences(model, pairs, device, precisions)
    for name, found in report["map_differences"].items():
        print(f"max relative difference of the raw maps, {name} vs float32: "
              + ", ".join(f"{m} {v:.2e}" for m, v in found.items()))

    maps_kept: list[torch.Tensor] = []
    embedded_items, _, _ = embed_items(model, items[:args.stage_pairs * 2], device=device, feature_maps=maps_kept)
    kept = {i.image_id: m for i, m in zip(embedded_items, maps_kept, strict=True)}
    sweep_inputs = []
    for pair in pairs[:args.sweep_maps]:
        raw = explain_from_feature_maps(model, kept[pair.query.image_id].unsqueeze(0),
                                        kept[pair.retrieved.image_id].unsqueeze(0)).overall("query")[0]
        sweep_inputs.append((normalised_at_image_size(raw, pair.query.size)[0], pair.query.box))
    report["sweep_maps_per_second"] = sweep_rates(sweep_inputs, args.sweep_rounds)
    print("\nsweep alone, maps/s (median of rounds): | thresholds | old (OpenCV loop) | new (one pass) | new/old |")
    for grid in GRIDS:
        rate = report["sweep_maps_per_second"][grid]
        print(f"| {grid} | {rate['old']:.1f} | {rate['new']:.1f} | {rate['new'] / rate['old']:.1f}x |")
    print(f"new sweep: 100 thresholds cost {report['sweep_maps_per_second']['new_100_over_1_cost']:.2f}x one")

    samples = Path(args.samples)
    decode = {"cub": [i.path for i in items[:32]]}
    market = sorted((samples / "market1501").rglob("*.jpg"))[:32]
    panoramas = sorted((samples / "cvusa").rglob("streetview/panos/*.jpg"))
    aerials = sorted((samples / "cvusa").rglob("bingmap/19/*.jpg"))
    if market and panoramas and aerials:
        decode.update({"market": [str(p) for p in market], "cvusa panorama": [str(p) for p in panoramas],
                       "cvusa aerial": [str(p) for p in aerials]})
    report["stage_seconds"] = stage_costs(model, items, pairs, kept, device, decode)
    report["stage_seconds"]["floor decode per image"] = floors[0]["decode_seconds"] / images
    report["stage_seconds"]["floor forward per image"] = floors[0]["forward_seconds"] / images
    print("\nper-stage costs (ms):")
    for name, value in report["stage_seconds"].items():
        print(f"  {name}: {value * 1000:.3f}" if "pixels" not in name else f"  {name}: {value:.0f}")
    costs = report["stage_seconds"]
    if in_process:
        rows = tables[in_process]["localization_items"]
        swept = len(rows) / len(FINE_THRESHOLDS)  # maps of the run
        accounted = (images * (costs["floor decode per image"] + costs["floor forward per image"])
                     + rows["pair_id"].nunique() * costs[EXPLAIN]
                     + swept * (costs["present per map (at image size)"] + costs["sweep per map (100 thresholds)"]))
        fixed = statistics.median(seconds[in_process]) - accounted
        print(f"end to end in-process {statistics.median(seconds[in_process]):.1f} s = stages {accounted:.1f} s + "
              f"fixed {fixed:.1f} s")
        if fixed < 0:  # the stages were timed while the machine was busier than during the flow runs
            print("stage costs add up to more than the measured run: the machine's load changed between the "
                  "measurements; fixed cost taken as 0, the predictions below overestimate")
        report["stages_over_end_to_end"] = accounted / statistics.median(seconds[in_process])
        costs["fixed (orchestration, summary, figures) per run"] = max(fixed, 0.0)
    report["predictions_seconds"] = predictions(costs, args.gpu_forward_ms / 1000, args.gpu_machine_cpus)
    print(f"\npredicted wall time (s); GPU forward ASSUMED {args.gpu_forward_ms} ms per 224x224 image, "
          f"{args.gpu_machine_cpus} CPU workers beside the GPUs:")
    for workload, values in report["predictions_seconds"].items():
        print(f"  {workload}: " + ", ".join(f"{k} {v:.0f}" for k, v in values.items()))
    report["load_average_end"] = os.getloadavg()
    print(f"load average at the end: {report['load_average_end']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, default=float)


if __name__ == "__main__":
    main()
