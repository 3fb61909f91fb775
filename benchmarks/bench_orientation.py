"""Orientation estimation benchmark: pairs per second per method, and what the point-specific step costs.

    .venv/bin/python benchmarks/bench_orientation.py [--batch 4] [--repeats 5] [--warmup 1] [--top-k 10]
        [--device cpu|cuda] [--threads N] [--panorama-size 224x1232] [--aerial-size 512x512]
        [--embedding-dim 4096] [--checkpoint CROSSVIEW.pt] [--json OUT.json]

Set-up: the paper's two-branch model (``build_crossview_model``: MobileNetV2 x 2,
GAP, shared FC to 4096; ImageNet weights when installed, else random -- the
timing does not depend on them) or ``--checkpoint``; one batch of B seeded
random (panorama 224x1232, aerial 512x512) inputs, already preprocessed (image
decoding and rotation are the same for every method and not timed).

Rows (median of ``--repeats`` timed calls after ``--warmup`` rounds, interleaved
round-robin so background load spreads over all rows):

  explain          ``model.explain(panorama, aerial)``: both backbones + position embeddings (the model call)
  overall          given the explanation: both overall maps, two argmaxes, the angles
  point_specific   given the explanation: the panorama overall map, its argmax, the point-specific map of that
                   cell (``point_specific_cells``: one matrix-vector product per pair), its argmax, the angles
  point_specific_top{k}  given the explanation: the robust estimator (k point-specific maps, weighted mode of
                   their maxima)
  ps_step          the point-specific map alone (``point_specific_cells`` of one cell per pair)
  aerial_forward   one forward of the aerial branch alone: what the point-specific step would cost were it a
                   model call

Pairs per second per method = B / (explain + method). The cost of the
point-specific step relative to the overall estimator is ps_step / overall and
point_specific / overall; relative to a model call, ps_step / aerial_forward.
Before timing, the script checks that ``point_specific_cells`` equals the row of
the point-to-point matrix P. Nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from eml_core.crossview_model import build_crossview_model, load_crossview_model
from eml_core.orientation import estimate_from_maps, estimate_point_specific, estimate_top_k, top_k_method


def _time(function, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--panorama-size", default="224x1232", help="model input HxW (without --checkpoint)")
    parser.add_argument("--aerial-size", default="512x512", help="model input HxW (without --checkpoint)")
    parser.add_argument("--embedding-dim", type=int, default=4096)
    parser.add_argument("--checkpoint")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device if args.device == "cpu" or torch.cuda.is_available() else "cpu"

    if args.checkpoint:
        model = load_crossview_model(args.checkpoint)
    else:
        sizes = [tuple(int(v) for v in text.split("x")) for text in (args.panorama_size, args.aerial_size)]
        model = build_crossview_model("mobilenet_v2", args.embedding_dim, sizes[0], sizes[1], allow_random_init=True)
    model.to(device).eval()
    g = torch.Generator().manual_seed(0)
    panorama_size = model.street.preprocessing.input_size or (224, 1232)
    aerial_size = model.aerial.preprocessing.input_size or (512, 512)
    panorama = torch.randn(args.batch, 3, *panorama_size, generator=g).to(device)
    aerial = torch.randn(args.batch, 3, *aerial_size, generator=g).to(device)

    with torch.no_grad():
        explanation = model.explain(panorama, aerial)
        cells = explanation.overall("query").flatten(1).argmax(1)
        step = explanation.point_specific_cells("query", cells.view(-1, 1))
        rows_of_p = explanation.point_to_point.flatten(1, 2)[torch.arange(args.batch), cells]
        difference = float((step[:, 0] - rows_of_p).abs().max())
        assert torch.allclose(step[:, 0], rows_of_p, rtol=1e-4, atol=1e-6 * float(rows_of_p.abs().max())), difference

    def point_specific(c):
        return explanation.point_specific_cells("query", c)

    robust = top_k_method(args.top_k)
    rows = {
        "explain": lambda: model.explain(panorama, aerial),
        "overall": lambda: estimate_from_maps(explanation.overall("query"), explanation.overall("retrieved")),
        "point_specific": lambda: estimate_point_specific(explanation.overall("query"), point_specific),
        robust: lambda: estimate_top_k(explanation.overall("query"), point_specific, args.top_k),
        "ps_step": lambda: explanation.point_specific_cells("query", cells.view(-1, 1)),
        "aerial_forward": lambda: model.aerial(aerial),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    with torch.no_grad():
        for repeat in range(args.warmup + args.repeats):
            for name, function in rows.items():
                seconds = _time(function, device)
                if repeat >= args.warmup:
                    times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    b = args.batch
    print(f"device {device}, threads {args.threads}, batch {b}, panorama {tuple(panorama_size)}, aerial "
          f"{tuple(aerial_size)}, grids {explanation.feature_size('query')} x {explanation.feature_size('retrieved')}, "
          f"embedding {explanation.query.features.shape[-1]}; point_specific_cells == row of P (max |diff| "
          f"{difference:.2e})")
    print(f"{'row':18} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'pairs/s (method only)':>22} "
          f"{'pairs/s (explain + method)':>27}")
    for name, values in times.items():
        alone = b / median[name]
        method = name in ("overall", "point_specific", robust)
        total = b / (median["explain"] + median[name]) if method else float("nan")
        print(f"{name:18} {median[name] * 1e3:10.2f} {min(values) * 1e3:9.2f} {max(values) * 1e3:9.2f} "
              f"{alone:22.1f} {total:27.2f}")
    ratios = {
        "point_specific / overall": median["point_specific"] / median["overall"],
        f"{robust} / overall": median[robust] / median["overall"],
        "ps_step / overall": median["ps_step"] / median["overall"],
        "ps_step / aerial_forward": median["ps_step"] / median["aerial_forward"],
        "ps_step / explain": median["ps_step"] / median["explain"],
    }
    for name, value in ratios.items():
        print(f"{name:28} {value:8.4f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": device, "batch": b, "median_seconds": median, "ratios": ratios,
                       "samples": times}, handle, indent=2)


if __name__ == "__main__":
    main()
