"""Faithfulness and sanity checks of every map method on the CUB sample, with the default trained model.

    .venv/bin/python benchmarks/measure_faithfulness_cub.py --data ../shared/data/cub200 --out runs/faithfulness-cub \
        [--model runs/faithfulness-cub/model.pt] [--pairs 16] [--removals blur,mean,road] [--batch-size 128]

1. The model: ``--model`` if that checkpoint exists, else the default recipe
   (``eml_core.training.train_model``: frozen ImageNet MobileNetV2 + gap_fc, Multi-Similarity loss) trained on
   the sample's ``train`` split and saved to ``OUT/model.pt``.
2. The pairs: the ``test`` split embedded, each image paired with its nearest same-class image
   (``same_class_pairs``, the localization protocol); the first pair of each of the first ``--pairs`` classes.
3. Deletion / insertion (both sides), the point-specific ratio and cascading randomization, per removal;
   forward passes and wall time of each.
4. Writes ``faithfulness_curves``, ``faithfulness_points``, ``faithfulness_summary``, ``sanity``,
   ``sanity_summary`` (Parquet), ``faithfulness_curves.png``, ``sanity.png`` and ``report.json`` to ``OUT``,
   and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import torch

from eml_core.datasets import load_cub
from eml_core.faithfulness import (
    as_image_pairs,
    count_forward_passes,
    evaluate_faithfulness,
    evaluate_point_faithfulness,
    most_faithful,
    summarise_faithfulness,
)
from eml_core.faithfulness_figures import curves_figure, sanity_figure
from eml_core.models import load_model, save_model
from eml_core.retrieval import embed_items, same_class_pairs
from eml_core.sanity import evaluate_sanity, randomization_layers, sanity_verdicts, summarise_sanity
from eml_core.tables import to_arrow
from eml_core.training import TrainingConfig, train_model


def the_model(data, model_path: str | None, out: Path):
    if model_path and Path(model_path).is_file():
        return load_model(model_path), model_path
    started = time.perf_counter()
    model, report = train_model(data.split("train"), TrainingConfig())
    path = out / "model.pt"
    save_model(model, path)
    print(f"trained the default model on {report.train_items} images in {time.perf_counter() - started:.0f} s "
          f"(final loss {report.loss_history[-1]:.3f}) -> {path}")
    return model, str(path)


def the_pairs(model, data, count: int):
    items = data.split("test")
    kept, embeddings, errors = embed_items(model, items)
    pairs, _ = same_class_pairs(kept, embeddings, "nearest")
    chosen, classes = [], set()
    for pair in sorted(pairs, key=lambda p: (p.query.label, p.query.image_id)):
        if pair.query.label not in classes and len(chosen) < count:
            classes.add(pair.query.label)
            chosen.append(pair)
    return as_image_pairs(chosen)


def write(out: Path, name: str, rows) -> None:
    pq.write_table(to_arrow(name, rows), out / f"{name}.parquet")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cub200")
    parser.add_argument("--out", default="runs/faithfulness-cub")
    parser.add_argument("--model")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--removals", default="blur,mean,road")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_cub(args.data)
    model, model_path = the_model(data, args.model, out)
    pairs = the_pairs(model, data, args.pairs)
    print(f"{len(pairs)} test pairs (nearest same-class partner), model {model_path}")

    curves, points, errors, cost = [], [], [], []

    def timed(step: str, evaluate, *arguments, **options):
        """Run one evaluation, keep its error rows and record its forward passes and seconds; returns its rows."""
        with count_forward_passes(model) as count:
            started = time.perf_counter()
            rows, problems = evaluate(model, pairs, *arguments, **options)
            seconds = time.perf_counter() - started
        errors.extend(problems)
        cost.append({"step": step, "forward_calls": count.calls, "images": count.images, "seconds": seconds,
                     "pairs_per_second": len(pairs) / seconds})
        return rows

    for removal in args.removals.split(","):
        curves += timed(f"curves ({removal})", evaluate_faithfulness, removals=removal, batch_size=args.batch_size)
        points += timed(f"points ({removal})", evaluate_point_faithfulness, removal=removal,
                        batch_size=args.batch_size)
    sanity = timed(f"sanity ({len(randomization_layers(model))} depths)", evaluate_sanity)

    summary = summarise_faithfulness(curves, points)
    sanity_summary = summarise_sanity(sanity)
    for name, rows in (("faithfulness_curves", curves), ("faithfulness_points", points),
                       ("faithfulness_summary", summary), ("sanity", sanity), ("sanity_summary", sanity_summary)):
        write(out, name, rows)
    (out / "faithfulness_curves.png").write_bytes(curves_figure(curves))
    (out / "sanity.png").write_bytes(sanity_figure(sanity_summary))

    pd.set_option("display.width", 200)
    table = pd.DataFrame(summary)
    shown = table[["removal", "method", "pairs", "deletion_auc", "deletion_auc_low", "deletion_auc_high",
                   "insertion_auc", "insertion_auc_low", "insertion_auc_high", "point_ratio", "point_ratio_low",
                   "point_ratio_high", "point_ratio_vs_overall"]]
    print("\nfaithfulness_summary (AUC of the similarity over the fraction of pixels; 95% bootstrap over pairs)")
    print(shown.sort_values(["removal", "deletion_auc"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    best = most_faithful(summary)
    print("\nmost faithful method per measure and removal")
    print(pd.DataFrame(best).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    verdicts = sanity_verdicts(sanity_summary)
    print("\nsanity (cascading randomization): Spearman / SSIM to the trained model's maps")
    wide = pd.DataFrame(sanity_summary).pivot_table(index=["depth", "layer"], columns="method",
                                                     values=["spearman", "ssim"])
    print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    print(pd.DataFrame(verdicts).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\ncost")
    print(pd.DataFrame(cost).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if errors:
        print(f"\n{len(errors)} errors: " + "; ".join(f"{e.item}: {e.problem}" for e in errors[:5]))
    report = {"model": model_path, "pairs": [p.pair_id for p in pairs], "summary": summary, "most_faithful": best,
              "sanity_verdicts": verdicts, "cost": cost, "errors": [e.to_dict() for e in errors]}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
