"""Interactive retrieval: query latency against gallery size, faiss IVF recall, and the retrieval benchmarks.

    .venv/bin/python benchmarks/bench_retrieval.py latency [--sizes 1000,10000,100000,1000000] [--dim 512]
        [--queries 20] [--repeats 3] [--nprobe 1,8,32] [--nlist-factor 1] [--noise 3] [--threads N]
        [--device cpu|cuda|auto] [--json OUT]
    .venv/bin/python benchmarks/bench_retrieval.py composite --out DIR [--model SPEC | --epochs 30]
        [--gallery 240] [--queries 24] [--device cpu]
    .venv/bin/python benchmarks/bench_retrieval.py market1501 --dataset market1501:PATH --out DIR
        [--model SPEC | --epochs 30] [--device cpu]

latency: synthetic clustered embeddings (a mixture of Gaussians, so that IVF
cells mean something), L2-normalised. For each gallery size G, per query
vector (batch of one, the interactive case): (a) a bare numpy matrix-vector
product ``E_hat @ v`` on the same float32 array (the baseline); (b) torch's
matrix-vector product as ExactSearch does it (``ExactSearch.scores``); (c) a
whole exact query: (b) + top-10 (``ExactSearch.search``). Ratios (b)/(a),
(c)/(a). Then faiss IVF-Flat (``IVFSearch``, nlist = factor x sqrt(G)): recall@10
against the exact top-10 and its query time, for each nprobe. Medians over
``queries x repeats`` timed calls after one warm-up per row.

composite: train a small model on the embedded default data (frozen
mobilenet_v2 + gap_fc, eml_core.training.train_model; or use --model), embed
the composite gallery into an index, rank every query region by the five
methods, write retrieval_rankings / retrieval_eval / errors Parquet tables and
montages under --out, print precision@1/5/10 and mAP per method.

market1501: train on bounding_box_train (or use --model), index
bounding_box_test, rank query/ by overall similarity with the benchmark's rules
(junk -1 and same-camera matches ignored), print Rank-1/5/10 and mAP.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eml_core.gallery_index import (
    ExactSearch,
    IVFSearch,
    build_index,
    recall_against_exact,
)
from eml_core.results import ResultsLocation

# ---------------------------------------------------------------------------------------------
# latency


def clustered_embeddings(count: int, dim: int, clusters: int, seed: int, noise: float = 3.0) -> np.ndarray:
    """``count`` unit vectors around ``clusters`` random centres (float32, generated in chunks). The centres depend
    only on (clusters, dim), so galleries and queries drawn with different seeds share them."""
    centres = np.random.default_rng([clusters, dim]).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):
        stop = min(count, start + 100_000)
        block = centres[rng.integers(clusters, size=stop - start)]
        block += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _timed(function, argument, repeats: int) -> list[float]:
    function(argument)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - started)
    return times


def _exact_rows(search: ExactSearch, matrix: np.ndarray, queries: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds per query vector of (a) numpy ``matrix @ v``, (b) ExactSearch.scores, (c) ExactSearch.search."""
    def numpy_mv(v):
        return matrix @ v

    def torch_mv(v):
        return _sync(search.scores(v), search)

    def exact_query(v):
        return search.search(v, 10)

    rows = {"numpy_mv": numpy_mv, "torch_mv": torch_mv, "exact_query_top10": exact_query}
    times: dict[str, list[float]] = {name: [] for name in rows}
    for vector in queries:
        for name, function in rows.items():  # interleaved, so background load spreads over all rows
            times[name] += _timed(function, vector, repeats)
    return {name: statistics.median(values) for name, values in times.items()}


def _ivf_rows(gallery: np.ndarray, queries: np.ndarray, exact: np.ndarray, args) -> list[dict]:
    nlist = max(1, int(args.nlist_factor * len(gallery) ** 0.5))
    started = time.perf_counter()
    ivf = IVFSearch(gallery, "cosine", nlist=nlist, nprobe=1, train_size=min(len(gallery), 64 * nlist))
    build = time.perf_counter() - started

    def one_query(v):
        return ivf.search(v[None], 10)

    out = []
    for nprobe in args.nprobe:
        ivf.nprobe = nprobe
        _, found = ivf.search(queries, 10)
        times = [t for vector in queries for t in _timed(one_query, vector, args.repeats)]
        out.append({"nlist": nlist, "nprobe": ivf.nprobe, "recall_at_10": recall_against_exact(found, exact, 10),
                    "query_ms": statistics.median(times) * 1e3, "build_s": build})
    return out


def latency(args) -> dict:
    from threadpoolctl import threadpool_limits

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    results = []
    with threadpool_limits(threads):  # numpy's BLAS gets the same number of threads as torch
        for size in args.sizes:
            clusters = max(16, int(size ** 0.5))
            gallery = clustered_embeddings(size, args.dim, clusters, seed=0, noise=args.noise)
            queries = clustered_embeddings(args.queries, args.dim, clusters, seed=1, noise=args.noise)
            search = ExactSearch(gallery, "cosine", args.device)
            # the baseline multiplies the very array ExactSearch holds (on the CPU) or the same values
            matrix = search.matrix.numpy() if search.device.type == "cpu" else search.matrix.cpu().numpy()
            median = _exact_rows(search, matrix, queries, args.repeats)
            entry = {"gallery": size, "dim": args.dim, "device": str(search.device),
                     **{f"{k}_ms": v * 1e3 for k, v in median.items()},
                     "torch_mv_vs_numpy": median["torch_mv"] / median["numpy_mv"],
                     "exact_query_vs_numpy": median["exact_query_top10"] / median["numpy_mv"], "ivf": []}
            _, exact = search.search(queries, 10)
            if size >= 10_000 and not args.skip_ivf:
                entry["ivf"] = _ivf_rows(gallery, queries, exact, args)
            results.append(entry)
            _print_latency(entry)
    return {"machine": _machine(), "threads": threads, "noise": args.noise, "rows": results}


def _sync(value, search):
    if search.device.type == "cuda":
        torch.cuda.synchronize()
    return value


def _print_latency(entry: dict) -> None:
    print(f"G={entry['gallery']:>9,} d={entry['dim']} [{entry['device']}]  numpy mv {entry['numpy_mv_ms']:9.3f} ms | "
          f"torch mv {entry['torch_mv_ms']:9.3f} ms ({entry['torch_mv_vs_numpy']:.2f}x numpy) | exact query + top-10 "
          f"{entry['exact_query_top10_ms']:9.3f} ms ({entry['exact_query_vs_numpy']:.2f}x numpy)", flush=True)
    for ivf in entry["ivf"]:
        print(f"    IVF-Flat nlist={ivf['nlist']:>5} nprobe={ivf['nprobe']:>3}: recall@10 vs exact "
              f"{ivf['recall_at_10']:.3f}, query {ivf['query_ms']:8.3f} ms (build {ivf['build_s']:.1f} s)", flush=True)


def _machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}


# ---------------------------------------------------------------------------------------------
# trained model


def trained_model(args, training_items, checkpoint: Path):
    """``--model`` if given, else a frozen mobilenet_v2 + gap_fc trained on ``training_items()`` (saved to
    ``checkpoint``)."""
    from eml_core.models import model_from_spec, save_model
    from eml_core.training import TrainingConfig, train_model

    if args.model:
        return model_from_spec(args.model)
    items = training_items()
    started = time.perf_counter()
    config = TrainingConfig(epochs=args.epochs, seed=args.seed, images_per_class=args.images_per_class)
    model, report = train_model(items, config, device=args.device)
    save_model(model, checkpoint, extra={"loss_history": report.loss_history})
    print(f"trained {config.backbone}:{config.head} on {report.train_items} images, {config.epochs} epochs, "
          f"final loss {report.loss_history[-1]:.4f}, {time.perf_counter() - started:.0f} s -> {checkpoint}",
          flush=True)
    return model


def _write_tables(out: ResultsLocation, rankings, evals, errors) -> None:
    out.write_table("retrieval_rankings.parquet", "retrieval_rankings", rankings)
    out.write_table("retrieval_eval.parquet", "retrieval_eval", evals)
    out.write_table("errors.parquet", "errors", [e.to_dict() for e in errors])


def composite(args) -> dict:
    from eml_core.datasets import load_cub
    from eml_core.region_retrieval import montage_for_query
    from eml_core.retrieval_benchmark import (
        CompositeConfig,
        ensure_composites,
        eval_table_text,
        evaluate_composites,
        load_composites,
    )
    from eml_core.synthetic import DEFAULT_LOCATION, ensure_synthetic_dataset
    from eml_core.tables import frame

    torch.manual_seed(args.seed)
    out = ResultsLocation(args.out)
    folder = Path(args.out)

    def training_items():
        # the composites show all 12 objects: train on the first half of every class's images (the per-image
        # official split, as when docs/retrieval.md's numbers were measured), not on half of the classes
        return load_cub(ensure_synthetic_dataset(args.data or DEFAULT_LOCATION), split_rule="official").split("train")

    model = trained_model(args, training_items,
                          folder / "model.pt")
    config = CompositeConfig(gallery_images=args.gallery, query_images=args.queries, seed=args.seed + 1)
    benchmark = load_composites(ensure_composites(folder, config))
    started = time.perf_counter()
    index, added, errors = build_index(folder / "index", model, benchmark.gallery_items(), benchmark.root,
                                       dataset="composites", device=args.device)
    print(f"index: {len(index)} gallery images ({added} embedded now, {time.perf_counter() - started:.1f} s)",
          flush=True)
    started = time.perf_counter()
    rankings, evals, query_errors = evaluate_composites(model, index, benchmark, device=args.device)
    print(f"{len(benchmark.region_queries())} query regions x 5 methods ranked and scored in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    errors += query_errors
    _write_tables(out, rankings, evals, errors)
    table = frame("retrieval_rankings", rankings)
    for query_id in list(dict.fromkeys(table["query_id"]))[:args.montages]:
        out.write_bytes(f"montages/{query_id.replace(':', '_')}.png", montage_for_query(table, query_id, top_k=5))
    print(eval_table_text(evals))
    return {"evals": evals, "errors": len(errors)}


def market1501(args) -> dict:
    from eml_core.dataset_specs import dataset_from_spec
    from eml_core.gallery_index import GalleryIndex
    from eml_core.retrieval_benchmark import eval_table_text, evaluate_market1501

    data = dataset_from_spec(args.dataset)
    folder = Path(args.out)
    model = trained_model(args, lambda: data.split("train"), folder / "model.pt")
    index, _, errors = build_index(folder / "index", model, data.split("gallery"), data.root, dataset=args.dataset,
                                   device=args.device)
    index = GalleryIndex.open(folder / "index")
    rows, result, query_errors = evaluate_market1501(model, data.split("query"), index, device=args.device)
    errors += query_errors + data.errors
    _write_tables(ResultsLocation(folder), [], rows, errors)
    print(f"{result['queries']} queries evaluated, {result['skipped']} without a true match; gallery {len(index)}")
    print(eval_table_text(rows))
    return {"evals": rows, "result": result, "errors": len(errors)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    lat = commands.add_parser("latency")
    lat.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                     default=[1000, 10_000, 100_000, 1_000_000])
    lat.add_argument("--dim", type=int, default=512)
    lat.add_argument("--queries", type=int, default=20)
    lat.add_argument("--repeats", type=int, default=3)
    lat.add_argument("--nprobe", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    lat.add_argument("--nlist-factor", type=float, default=1.0)
    lat.add_argument("--noise", type=float, default=3.0, help="cluster spread relative to the centres' scale")
    lat.add_argument("--skip-ivf", action="store_true")
    lat.add_argument("--device", default="cpu")
    lat.add_argument("--threads", type=int, help="torch and BLAS threads (default: torch's default)")
    lat.add_argument("--json")
    for name in ("composite", "market1501"):
        sub = commands.add_parser(name)
        sub.add_argument("--out", required=True)
        sub.add_argument("--model", help="a model spec; default: train frozen mobilenet_v2 + gap_fc")
        sub.add_argument("--epochs", type=int, default=30)
        sub.add_argument("--images-per-class", type=int, default=4)
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--device", default="cpu")
        sub.add_argument("--json")
        if name == "composite":
            sub.add_argument("--data", help="folder of the embedded default data (default: data/generated/synthetic)")
            sub.add_argument("--gallery", type=int, default=240)
            sub.add_argument("--queries", type=int, default=24)
            sub.add_argument("--montages", type=int, default=4)
        else:
            sub.add_argument("--dataset", required=True)
    args = parser.parse_args(argv)
    result = {"latency": latency, "composite": composite, "market1501": market1501}[args.command](args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
