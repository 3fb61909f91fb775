"""Fine-tuning cost of the paper-like model (resnet50:gmp_fc, 512-d): measured on this CPU, estimated for a GPU.

    .venv/bin/python benchmarks/bench_fine_tune.py [--data ../shared/data/cub200] [--batch 8] [--repeats 3] \
        [--size 224] [--epoch-images 5864] [--gpu-tflops 100] [--loader-workers 8] [--json OUT.json]

What is measured here (CPU, this machine):

1. FLOPs of one training step per image (forward + backward of ResNet-50 + GMP + FC at --size), counted by
   ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2).
2. Wall time per image of a training step (forward, Multi-Similarity loss, backward, AdamW) on batches of
   --batch images, median of --repeats after one warm-up step; hence the FLOP/s this CPU sustains.
3. Wall time per image of what the DataLoader workers do: decode a CUB JPEG and preprocess it to --size
   (one process), over the sample's images.

What is estimated (no GPU here): an epoch of --epoch-images images (5,864: CUB's 100 training classes) on a GPU
takes about max(compute, loading): compute = FLOPs per epoch / --gpu-tflops (an ASSUMED sustained bfloat16
throughput, e.g. 100 TFLOP/s, about a third of an A100's or a tenth of an H100's dense peak), loading =
decode time per image x images / --loader-workers. Both the assumption and the measurements are printed.
Random initialisation: the cost of a step does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def training_step(model, batch, labels, loss_function, miner, optimiser) -> None:
    embeddings = model(batch)
    loss = loss_function(embeddings, labels, miner(embeddings, labels))
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cub200", help="a CUB-200-2011 folder (decode timing)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epoch-images", type=int, default=5864, help="images per epoch (CUB classes 1-100)")
    parser.add_argument("--gpu-tflops", type=float, default=100.0,
                        help="ASSUMED sustained GPU throughput, TFLOP/s (bfloat16)")
    parser.add_argument("--loader-workers", type=int, default=8)
    parser.add_argument("--decode-images", type=int, default=64, help="images timed for decoding")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from torch.utils.flop_counter import FlopCounterMode

    from eml_core.datasets import load_cub
    from eml_core.images import load_image
    from eml_core.models import build_model
    from eml_core.training import loss_and_miner

    model = build_model("resnet50", "gmp_fc", 512, pretrained=False, input_size=(args.size, args.size)).train()
    loss_function, miner = loss_and_miner("multi_similarity")
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
    labels = torch.arange(args.batch) // 2  # two images per class: the loss has positive and negative pairs

    counter = FlopCounterMode(display=False)
    with counter:
        embeddings = model(batch)
        loss_function(embeddings, labels, miner(embeddings, labels)).backward()
    flops_per_image = counter.get_total_flops() / args.batch
    optimiser.zero_grad(set_to_none=True)

    training_step(model, batch, labels, loss_function, miner, optimiser)  # warm-up
    step_times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        training_step(model, batch, labels, loss_function, miner, optimiser)
        step_times.append((time.perf_counter() - started) / args.batch)
    cpu_seconds_per_image = statistics.median(step_times)

    dataset = load_cub(args.data)
    preprocessing = model.preprocessing
    decode_times = []
    for item in dataset.items[: args.decode_images]:
        started = time.perf_counter()
        preprocessing(load_image(item.path).pixels)
        decode_times.append(time.perf_counter() - started)
    decode_seconds = statistics.median(decode_times)

    compute_seconds = flops_per_image * args.epoch_images / (args.gpu_tflops * 1e12)
    loading_seconds = decode_seconds * args.epoch_images / max(1, args.loader_workers)
    numbers = {
        "size": args.size, "batch": args.batch, "threads": torch.get_num_threads(),
        "gflops_per_image_train_step": flops_per_image / 1e9,
        "cpu_seconds_per_image_train_step": cpu_seconds_per_image,
        "cpu_sustained_tflops": flops_per_image / cpu_seconds_per_image / 1e12,
        "cpu_minutes_per_epoch": cpu_seconds_per_image * args.epoch_images / 60,
        "decode_ms_per_image": decode_seconds * 1000, "decoded_images": len(decode_times),
        "epoch_images": args.epoch_images, "assumed_gpu_tflops": args.gpu_tflops,
        "loader_workers": args.loader_workers,
        "estimated_gpu_compute_seconds_per_epoch": compute_seconds,
        "estimated_loading_seconds_per_epoch": loading_seconds,
        "estimated_gpu_seconds_per_epoch": max(compute_seconds, loading_seconds),
    }
    for key, value in numbers.items():
        print(f"{key:45s} {value:.4g}" if isinstance(value, float) else f"{key:45s} {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
