"""Faithfulness benchmark: forward passes and pairs per second, batched forwards vs one forward per image.

    .venv/bin/python benchmarks/bench_faithfulness.py --data ../shared/data/cub200 \
        [--model mobilenet_v2:gap_fc] [--pairs 4] [--batch-size 128] [--removal mean] [--rounds 2] [--json OUT]

The same call, ``evaluate_faithfulness`` on the same pairs (both sides, every registered method plus the
random and gradient-oracle references, the default 13 steps, deletion and insertion), is timed with
``batch_size=1`` (one forward per perturbed image: the baseline) and with ``--batch-size`` (the perturbed
images of every method, step and curve of the shard go through the model together). The two settings are
interleaved for ``--rounds`` rounds; the median wall time of each is reported with the backbone calls and
images counted by ``count_forward_passes``, pairs per second, and the speed-up as a ratio. The rows of the
two settings are compared (max |difference| of the similarities). ``--removal mean`` keeps the removal cheap
so that the forwards dominate; ``road`` shows the cost of its sparse solves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import pandas as pd
import torch

from eml_core.datasets import load_cub
from eml_core.faithfulness import ImagePair, count_forward_passes, evaluate_faithfulness
from eml_core.models import model_from_spec


def test_pairs(data_root: str, count: int) -> list[ImagePair]:
    """The first two test images of each of the first ``count`` classes (by image id)."""
    by_class: dict[int, list] = {}
    for item in sorted(load_cub(data_root).split("test"), key=lambda i: int(i.image_id)):
        by_class.setdefault(item.label, []).append(item)
    pairs = [ImagePair(f"{members[0].image_id}-{members[1].image_id}", members[0].path, members[1].path)
             for _, members in sorted(by_class.items()) if len(members) >= 2]
    return pairs[:count]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cub200")
    parser.add_argument("--model", default="mobilenet_v2:gap_fc")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--removal", default="mean")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = model_from_spec(args.model).to(args.device)
    pairs = test_pairs(args.data, args.pairs)

    settings = {"one forward per image": 1, f"batched ({args.batch_size})": args.batch_size}
    times: dict[str, list[float]] = {name: [] for name in settings}
    counts, tables = {}, {}
    for _ in range(args.rounds):
        for name, batch_size in settings.items():
            with count_forward_passes(model) as count:
                started = time.perf_counter()
                rows, errors = evaluate_faithfulness(model, pairs, removals=args.removal, batch_size=batch_size,
                                                     device=args.device)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - started)
            if errors:
                raise SystemExit(f"errors: {errors[:3]}")
            counts[name], tables[name] = count, pd.DataFrame(rows)

    keys = ["pair_id", "side", "method", "removal", "curve", "step"]
    merged = tables["one forward per image"].merge(tables[f"batched ({args.batch_size})"], on=keys)
    difference = float((merged["similarity_x"] - merged["similarity_y"]).abs().max())
    result = []
    for name in settings:
        seconds = statistics.median(times[name])
        result.append({"setting": name, "forward_calls": counts[name].calls, "images": counts[name].images,
                       "seconds": seconds, "pairs_per_second": len(pairs) / seconds,
                       "images_per_second": counts[name].images / seconds})
    baseline = result[0]["seconds"]
    for row in result:
        row["speed_up"] = baseline / row["seconds"]
    print(f"{len(pairs)} pairs x 2 sides, removal {args.removal}, model {args.model}, {args.threads} threads, "
          f"{args.device}, median of {args.rounds} interleaved rounds; curve rows per setting: {len(merged)}")
    print(pd.DataFrame(result).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"max |similarity difference| between the settings: {difference:.2e}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": result, "max_difference": difference, "pairs": len(pairs), "removal": args.removal},
                      handle, indent=2)


if __name__ == "__main__":
    main()
