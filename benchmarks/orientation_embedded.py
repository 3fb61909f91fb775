"""The orientation experiment (paper Section VII-A, Fig. 9) on the embedded cross-view pairs, end to end on CPU.

1. Generate the embedded pairs (:func:`eml_core.crossview_data.generate_crossview_dataset`) into ``OUT/data``.
2. Train the two-branch model with the pipeline's own trainer (cached regime: frozen ImageNet MobileNetV2
   backbones, the shared FC trained with CVM-Net's loss on randomly rotated aerial images).
3. Rotate every validation aerial image by ``--rotations`` angles drawn per pair, estimate the orientation
   with every method and both overall maps, and summarise.

Writes ``OUT/model.pt``, the tables ``OUT/tables/*.parquet`` (orientation_items, orientation_summary,
orientation_histogram, crossview_recall, errors), the figures ``OUT/figures/*.png`` (Fig. 9 per overall map,
Fig. 8 examples) and ``OUT/summary.json``; prints the summary and the histograms.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from eml_core.crossview_data import CrossViewSyntheticConfig, generate_crossview_dataset, load_cvusa
from eml_core.crossview_model import save_crossview_model
from eml_core.crossview_training import CrossViewTrainingConfig, train_crossview
from eml_core.orientation import (
    OVERALL_MAPS,
    histogram_bins,
    orientation_histogram,
    orientation_summary,
    random_rotations,
)
from eml_core.orientation_evaluation import estimate_orientation
from eml_core.orientation_figures import histogram_png, render_example
from eml_core.results import ResultsLocation


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/orientation_embedded")
    parser.add_argument("--train-pairs", type=int, default=40)
    parser.add_argument("--val-pairs", type=int, default=24)
    parser.add_argument("--aerial-image", type=int, default=384, help="generated aerial images, pixels")
    parser.add_argument("--panorama-image", type=_size, default=(176, 968), help="generated panoramas, HxW")
    parser.add_argument("--panorama-size", type=_size, default=(224, 1232), help="model input, HxW")
    parser.add_argument("--aerial-size", type=_size, default=(512, 512), help="model input, HxW")
    parser.add_argument("--embedding-dim", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--rotations-per-aerial", type=int, default=3)
    parser.add_argument("--rotations", type=int, default=4, help="evaluation angles per validation pair")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--fill", default="reflect", choices=("reflect", "disc"))
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = ResultsLocation(args.out)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    config = CrossViewSyntheticConfig(train_pairs=args.train_pairs, val_pairs=args.val_pairs,
                                      aerial_size=args.aerial_image, panorama_size=args.panorama_image, seed=args.seed)
    dataset = load_cvusa(generate_crossview_dataset(Path(args.out) / "data", config), name="embedded")
    timings["generate_and_load_s"] = time.perf_counter() - started
    train, validation = dataset.split("train"), dataset.split("val")

    started = time.perf_counter()
    training = CrossViewTrainingConfig(embedding_dim=args.embedding_dim, panorama_size=args.panorama_size,
                                       aerial_size=args.aerial_size, epochs=args.epochs, batch_size=args.batch_size,
                                       rotations_per_aerial=args.rotations_per_aerial, aerial_fill=args.fill,
                                       seed=args.seed)
    model, report = train_crossview(train, validation, training, allow_random_init=True)
    timings["train_s"] = time.perf_counter() - started
    timings["train_feature_cache_s"] = report.cache_seconds
    timings["train_mean_epoch_s"] = sum(report.epoch_seconds) / max(1, len(report.epoch_seconds))
    save_crossview_model(model, Path(args.out) / "model.pt", extra={"report": report.recalls})

    started = time.perf_counter()
    rotations = random_rotations([p.pair_id for p in validation], args.rotations, seed=args.seed + 1)
    rows, errors = estimate_orientation(model, validation, rotations, overall_maps=tuple(OVERALL_MAPS),
                                        top_k=args.top_k, fill=args.fill)
    timings["estimate_s"] = time.perf_counter() - started
    explained = len(validation) * args.rotations
    timings["explained_pairs_per_s"] = explained / timings["estimate_s"]

    summary = orientation_summary(rows)
    histogram = orientation_histogram(rows)
    recalls = [{"model": "embedded", "split": "val", **r} for r in report.recalls]
    all_errors = [e.to_dict() for e in dataset.errors + report.errors + errors]
    for name, data in (("orientation_items", rows), ("orientation_summary", summary),
                       ("orientation_histogram", histogram), ("crossview_recall", recalls), ("errors", all_errors)):
        out.write_table(f"tables/{name}.parquet", name, data)
    for overall_map in OVERALL_MAPS:
        out.write_bytes(f"figures/histogram_{overall_map}.png",
                        histogram_png(histogram, overall_map, title=f"embedded pairs, {explained} rotated pairs"))
    for pair in validation[:args.examples]:
        out.write_bytes(f"figures/example_{pair.pair_id}.png", render_example(model, pair, rotations[pair.pair_id][0],
                                                                              fill=args.fill))
    out.write_json("summary.json", {"timings": timings, "summary": summary, "recalls": recalls,
                                    "loss_history": report.loss_history, "errors": len(all_errors),
                                    "arguments": vars(args)})

    print(f"pairs: {len(train)} train, {len(validation)} val x {args.rotations} rotations = {explained} rotated "
          f"pairs; {len(all_errors)} error rows")
    print("timings: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    print("validation recall (street -> aerial): " + ", ".join(f"R@{r['at']} {r['recall']:.3f}" for r in recalls))
    print(f"{'overall map':20} {'method':26} {'+-3.5':>7} {'+-10':>7} {'+-30':>7} {'median':>8} {'mean':>8} "
          f"{'n':>5} {'flagged':>7}")
    for s in summary:
        print(f"{s['overall_map']:20} {s['method']:26} {s['within_3_5']:7.1%} {s['within_10']:7.1%} "
              f"{s['within_30']:7.1%} {s['median_abs_error']:8.2f} {s['mean_abs_error']:8.2f} {s['count']:5d} "
              f"{s['flagged']:7d}")
    centres = [c for c, _, _ in histogram_bins()]
    print("histograms (share per 7-degree bin; columns are bin centres -175 ... 175, 180):")
    for s in summary:
        shares = {h["bin_centre"]: h["share"] for h in histogram
                  if (h["overall_map"], h["method"], h["aerial_fill"]) == (s["overall_map"], s["method"],
                                                                           s["aerial_fill"])}
        cells = " ".join(f"{round(100 * shares[c]):2d}" if shares[c] else " ." for c in centres)
        print(f"{s['overall_map']:18} {s['method']:22} {cells}")
    print(f"written to {args.out}: " + json.dumps([n for n in out.list() if not n.startswith("data/")]))


if __name__ == "__main__":
    main()
