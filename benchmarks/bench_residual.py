"""The completeness residual on real images: S minus the sum of every contribution, per model and similarity.

    .venv/bin/python benchmarks/bench_residual.py [--shared ../shared/data]

Images: 10 CUB sample images and the paper's CUB demo pair (pairs of neighbours in that list). Models: the
ImageNet-pretrained MobileNetV2 with several heads (the only weights installed offline) and randomly
initialised ResNet-50 / VGG16 for the GAP, GMP and flatten heads. Features are float32; the residual is
computed in float64 (PairExplanation.completeness_residual), so it measures float32 rounding.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from eml_core import build_model, explain_pair, load_image
from eml_core.datasets import load_cub

MODELS = [("mobilenet_v2", "gap_fc"), ("mobilenet_v2", "gmp_fc"), ("mobilenet_v2", "gap_fc_relu_fc"),
          ("resnet50", "gap"), ("resnet50", "gmp_fc"), ("vgg16", "flatten_fc_bn")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = parser.parse_args()
    shared = Path(args.shared)
    paths = [item.path for item in load_cub(shared / "cub200").items[::40]][:10]
    paths += [str(shared / "paper_demo" / "Image_Retrieval" / "Images" / name) for name in ("51.jpg", "52.jpg")]
    torch.manual_seed(0)
    print(f"{'model':32s} {'similarity':10s} {'max |S - sum|':>14s} {'max relative':>13s}")
    worst_relative = 0.0
    for backbone, head in MODELS:
        model = build_model(backbone, head, embedding_dim=512, input_size=(224, 224),
                            pretrained=backbone == "mobilenet_v2")
        images = torch.stack([model.preprocessing(load_image(p).pixels) for p in paths])
        for similarity in ("cosine", "dot"):
            explanation = explain_pair(model, images[:-1], images[1:], similarity=similarity)
            residual = explanation.completeness_residual.abs()
            relative = (residual / explanation.similarity.double().abs().clamp_min(1e-12)).max().item()
            worst_relative = max(worst_relative, relative)
            weights = "pretrained" if backbone == "mobilenet_v2" else "random init"
            print(f"{backbone + ':' + head + ' (' + weights + ')':32s} {similarity:10s} "
                  f"{residual.max().item():14.2e} {relative:13.2e}")
    print(f"largest residual relative to |S|: {worst_relative:.2e} (float32 machine epsilon: "
          f"{torch.finfo(torch.float32).eps:.2e})")


if __name__ == "__main__":
    main()
