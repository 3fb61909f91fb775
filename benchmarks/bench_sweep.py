"""Threshold sweep benchmark: the one-pass union-find sweep against the OpenCV loop, in maps per second.

    .venv/bin/python benchmarks/bench_sweep.py [--maps 8] [--repeats 3] [--sizes 375x500,500x333,...]
        [--connectivity 4,8] [--json OUT.json]

Maps (seeded, normalised to [0, 1] by max like the localization step):

* ``upsampled_7x7``: a 7x7 map N(0.3, 1), rectified, bilinearly upsampled to the
  image size and divided by its max (:func:`eml_core.presentation.normalised_at_image_size`),
  like an overall map of a 224-input MobileNetV2 shown at the size of a CUB photograph.
* ``smooth``: a sum of 3-6 Gaussian blobs of random centre, width and weight drawn
  at full resolution, minus a random floor, rectified and divided by its max.

Grids: 1 threshold (0.5, and 0.0 = the lowest value of the other grids), the
paper's 7, the fine 100 (0.00 ... 0.99) and 1,000 (0.000 ... 0.999).

Every row times :func:`eml_core.sweep.sweep_thresholds` (boxes and IoUs of every
threshold of every map) and is the median of ``--repeats`` rounds after one
untimed warm-up; the rows of one family and connectivity are interleaved
round-robin in each round, so background load spreads over all rows. Before any
number is printed the script checks that both algorithms return identical
results on every map and grid it timed. Nothing is asserted about speed: the
ratios are printed for the reader (targets in docs/sweep.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from eml_core.presentation import normalised_at_image_size
from eml_core.sweep import FINE_THRESHOLDS, PAPER_THRESHOLDS, sweep_thresholds

GRIDS = {
    "1 (t=0.5)": (0.5,),
    "1 (t=0.0)": (0.0,),
    "7": PAPER_THRESHOLDS,
    "100": FINE_THRESHOLDS,
    "1000": tuple(round(0.001 * i, 3) for i in range(1000)),
}
CUB_SIZES = "375x500,500x333,333x500,500x375,400x500,500x400,360x480,480x360"


def upsampled_maps(sizes, count: int, seed: int) -> list[np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    maps = []
    for i in range(count):
        raw = torch.randn(7, 7, generator=generator) + 0.3
        maps.append(normalised_at_image_size(raw, sizes[i % len(sizes)])[0])
    return maps


def smooth_maps(sizes, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    maps = []
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
        heat = np.zeros((height, width), np.float32)
        for _ in range(rng.integers(3, 7)):
            centre_row, centre_column = rng.uniform(0, height), rng.uniform(0, width)
            sigma = rng.uniform(0.05, 0.25) * min(height, width)
            heat += rng.uniform(0.3, 1.0) * np.exp(-((rows - centre_row) ** 2 + (columns - centre_column) ** 2)
                                                   / (2 * sigma ** 2))
        heat = np.maximum(heat - rng.uniform(0, 0.3) * heat.max(), 0)
        maps.append((heat / heat.max()).astype(np.float32))
    return maps


def measure(maps, connectivity: int, repeats: int) -> tuple[dict, dict]:
    """Seconds per round for every (algorithm, grid), median over rounds; and the results of each."""
    rows = [(algorithm, grid) for algorithm in ("opencv", "union_find") for grid in GRIDS]
    truth = (0.0, 0.0, 10.0, 10.0)

    def run(algorithm, grid):
        return [sweep_thresholds(m, truth, GRIDS[grid], connectivity, algorithm=algorithm) for m in maps]

    run("union_find", "7")   # warm-up: loads (or compiles) the numba kernel
    seconds: dict = {row: [] for row in rows}
    results: dict = {}
    for _ in range(repeats):
        for row in rows:
            started = time.perf_counter()
            results[row] = run(*row)
            seconds[row].append(time.perf_counter() - started)
    return {row: statistics.median(values) for row, values in seconds.items()}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, default=8, help="maps per family (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per row; the median is kept")
    parser.add_argument("--sizes", default=CUB_SIZES, help="image sizes HxW, comma-separated (default: CUB-like)")
    parser.add_argument("--connectivity", default="4,8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    families = {"upsampled_7x7": upsampled_maps(sizes, args.maps, args.seed),
                "smooth": smooth_maps(sizes, args.maps, args.seed)}
    print(f"maps: {args.maps} per family, sizes {args.sizes}; median of {args.repeats} rounds; "
          f"torch threads {torch.get_num_threads()}")
    report = []
    for family, maps in families.items():
        pixels = sum(m.size for m in maps) / len(maps)
        for connectivity in (int(c) for c in args.connectivity.split(",")):
            seconds, results = measure(maps, connectivity, args.repeats)
            for grid in GRIDS:
                if results[("opencv", grid)] != results[("union_find", grid)]:
                    raise SystemExit(f"MISMATCH: {family}, {connectivity}-connectivity, grid {grid}: "
                                     "the two algorithms disagree")
            print(f"\n{family}, {connectivity}-connectivity, {pixels:,.0f} pixels per map on average "
                  "(identical results on every map and grid)")
            print(f"{'thresholds':>10} {'OpenCV loop maps/s':>19} {'one-pass maps/s':>16} {'speed-up':>9}")
            for grid in GRIDS:
                old, new = seconds[("opencv", grid)], seconds[("union_find", grid)]
                print(f"{grid:>10} {len(maps) / old:19.1f} {len(maps) / new:16.1f} {old / new:8.1f}x")
                report.append({"family": family, "connectivity": connectivity, "thresholds": grid,
                               "pixels_per_map": pixels, "opencv_maps_per_s": len(maps) / old,
                               "union_find_maps_per_s": len(maps) / new, "speedup": old / new})
            new_100 = seconds[("union_find", "100")]
            print(f"one-pass, 100 thresholds / 1 threshold: {new_100 / seconds[('union_find', '1 (t=0.0)')]:.2f}x "
                  f"(t=0.0, the same pixels), {new_100 / seconds[('union_find', '1 (t=0.5)')]:.2f}x (t=0.5); "
                  f"/ one OpenCV labelling at t=0.5: {new_100 / seconds[('opencv', '1 (t=0.5)')]:.2f}x; "
                  f"1000 / 100 thresholds: {seconds[('union_find', '1000')] / new_100:.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
