"""Bad arguments are refused at the edge (issue 7, item 5): on the command line with one line and exit status 2
before any flow (or Prefect server) starts, and by the flow itself when a deployment passes them."""

from __future__ import annotations

import pytest

from eml_core.errors import ArgumentError
from tests.hostile.harness import record, run_cli
from tests.hostile.images import random_rgb

TINY = "tests.conftest:tiny"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_synthetic_root):
    folder = tmp_path_factory.mktemp("arguments")
    image = random_rgb(folder / "image.png")
    existing_file = folder / "a_file.txt"
    existing_file.write_text("not a folder")
    return {"image": str(image), "file": str(existing_file), "folder": str(folder),
            "dataset": f"cub:{tiny_synthetic_root}", "out": str(folder / "run")}


def _evaluate(files, *extra):
    return ["evaluate", "localization", "--dataset", files["dataset"], "--model", TINY, "--out", files["out"], *extra]


CASES = {
    # (argv builder, text the one-line error must contain)
    "evaluate --shard-size 0": (lambda f: _evaluate(f, "--shard-size", "0"), "--shard-size"),
    "evaluate --shard-size -1": (lambda f: _evaluate(f, "--shard-size", "-1"), "--shard-size"),
    "evaluate --shard-size abc": (lambda f: _evaluate(f, "--shard-size", "abc"), "--shard-size"),
    "evaluate --sides retreived": (lambda f: _evaluate(f, "--sides", "retreived"), "--sides: unknown side 'retreived'"),
    "evaluate --sides ''": (lambda f: _evaluate(f, "--sides", ""), "--sides: give at least one side"),
    "evaluate --sides query,query": (lambda f: _evaluate(f, "--sides", "query,query"), "--sides: sides are repeated"),
    "evaluate --methods foo": (lambda f: _evaluate(f, "--methods", "foo"), "--methods: unknown method 'foo'"),
    "evaluate --methods ,": (lambda f: _evaluate(f, "--methods", ","), "--methods: give at least one method"),
    "evaluate --splits validation": (lambda f: _evaluate(f, "--splits", "validation"), "--splits: unknown split"),
    "evaluate --pairing best": (lambda f: _evaluate(f, "--pairing", "best"), "--pairing"),
    "evaluate --connectivity 6": (lambda f: _evaluate(f, "--connectivity", "6"), "--connectivity"),
    "evaluate --seed -5": (lambda f: _evaluate(f, "--seed", "-5"), "--seed"),
    "evaluate --device meta": (lambda f: _evaluate(f, "--device", "meta"),
                               "--device: expected cpu, cuda, cuda:N or auto"),
    "evaluate --device tpu": (lambda f: _evaluate(f, "--device", "tpu"), "--device"),
    "evaluate --device cuda:7 (no CUDA here)": (lambda f: _evaluate(f, "--device", "cuda:7"), "--device"),
    "evaluate --out names an existing file": (
        lambda f: ["evaluate", "localization", "--dataset", f["dataset"], "--model", TINY, "--out", f["file"]],
        "exists and is not a folder"),
    "evaluate --out s3:// without a bucket": (
        lambda f: ["evaluate", "localization", "--dataset", f["dataset"], "--model", TINY, "--out", "s3://"],
        "is not a valid S3 bucket name"),
    "evaluate --out ftp://host/x": (
        lambda f: ["evaluate", "localization", "--dataset", f["dataset"], "--model", TINY, "--out", "ftp://host/x"],
        "only local folders and s3://"),
    "evaluate --model missing.pt": (
        lambda f: ["evaluate", "localization", "--dataset", f["dataset"], "--model", "missing.pt", "--out", f["out"]],
        "model spec 'missing.pt'"),
    "evaluate --model a folder": (
        lambda f: ["evaluate", "localization", "--dataset", f["dataset"], "--model", f["folder"], "--out", f["out"]],
        "is not a file"),
    "evaluate --dataset imagenet:/x": (
        lambda f: ["evaluate", "localization", "--dataset", "imagenet:/x", "--model", TINY, "--out", f["out"]],
        "dataset spec 'imagenet:/x'"),
    "evaluate --dataset cub:/no/such/folder": (
        lambda f: ["evaluate", "localization", "--dataset", "cub:/no/such/folder", "--model", TINY, "--out", f["out"]],
        "does not exist"),
    "evaluate --model-factory os.system": (lambda f: _evaluate(f, "--model-factory", "os.system"),
                                          "--model-factory: expected package.module:function"),
    "train --epochs 0": (lambda f: ["train", "--out", f["folder"] + "/m.pt", "--epochs", "0"], "--epochs"),
    "train --embedding-dim -3": (lambda f: ["train", "--out", f["folder"] + "/m.pt", "--embedding-dim", "-3"],
                                 "--embedding-dim"),
    "train --loss foo": (lambda f: ["train", "--out", f["folder"] + "/m.pt", "--loss", "foo"], "--loss"),
    "train --backbone resnet9": (lambda f: ["train", "--out", f["folder"] + "/m.pt", "--backbone", "resnet9"],
                                 "--backbone: unknown backbone 'resnet9'"),
    "train --head gapp": (lambda f: ["train", "--out", f["folder"] + "/m.pt", "--head", "gapp"],
                          "--head: unknown head"),
    "train --out names a folder": (lambda f: ["train", "--out", f["folder"]],
                                   "is a folder; expected a checkpoint file"),
    "train --device meta": (lambda f: ["train", "--out", f["folder"] + "/m.pt", "--device", "meta"], "--device"),
    "train --dataset folder:/missing": (lambda f: ["train", "--out", f["folder"] + "/m.pt", "--dataset",
                                                   "folder:/missing"], "does not exist"),
    "diagnose --models ''": (lambda f: ["diagnose", "--dataset", f["dataset"], "--models", "", "--out", f["out"]],
                             "--models: give at least one checkpoint"),
    "diagnose --models missing.pt": (lambda f: ["diagnose", "--dataset", f["dataset"], "--models", "missing.pt",
                                                "--out", f["out"]], "model spec 'missing.pt'"),
    "diagnose --methods foo": (lambda f: ["diagnose", "--dataset", f["dataset"], "--models", TINY, "--out", f["out"],
                                          "--methods", "foo"], "--methods: unknown method 'foo'"),
    "diagnose --shard-size 0": (lambda f: ["diagnose", "--dataset", f["dataset"], "--models", TINY, "--out",
                                           f["out"], "--shard-size", "0"], "--shard-size"),
    "rankings --top-k 0": (lambda f: ["rankings", "--dataset", f["dataset"], "--model", TINY, "--out",
                                      f["folder"] + "/r.parquet", "--top-k", "0"], "--top-k"),
    "rankings --queries -1": (lambda f: ["rankings", "--dataset", f["dataset"], "--model", TINY, "--out",
                                         f["folder"] + "/r.parquet", "--queries", "-1"], "--queries"),
    "rankings --out names a folder": (lambda f: ["rankings", "--dataset", f["dataset"], "--model", TINY, "--out",
                                                 f["folder"]], "is a folder"),
    "generate-data --out names a file": (lambda f: ["generate-data", "--out", f["file"]], "exists and is not a folder"),
    "explain --out names a file": (lambda f: ["explain", f["image"], f["image"], "--model", TINY, "--out", f["file"]],
                                   "exists and is not a folder"),
    "explain --similarity euclid": (lambda f: ["explain", f["image"], f["image"], "--model", TINY, "--out", f["out"],
                                               "--similarity", "euclid"], "--similarity"),
    "explain --input-size 0x5": (lambda f: ["explain", f["image"], f["image"], "--model", TINY, "--out", f["out"],
                                            "--input-size", "0x5"], "--input-size"),
    "explain --point-query nan,nan": (lambda f: ["explain", f["image"], f["image"], "--model", TINY, "--out",
                                                 f["out"], "--point-query", "nan,nan"], "--point-query"),
    "explain --device meta": (lambda f: ["explain", f["image"], f["image"], "--model", TINY, "--out", f["out"],
                                         "--device", "meta"], "--device"),
    "unknown command": (lambda f: ["explode"], "No such command 'explode'"),
    "evaluate --split-rule random": (lambda f: _evaluate(f, "--split-rule", "random"), "--split-rule"),
    "evaluate --table-splits validation": (lambda f: _evaluate(f, "--table-splits", "validation"),
                                           "--table-splits: unknown split"),
    "evaluate --split-rule classes on market1501": (
        lambda f: ["evaluate", "localization", "--dataset", f"market1501:{f['folder']}", "--split-rule", "classes",
                   "--model", TINY, "--out", f["out"]], "--split-rule: dataset spec"),
    "train --split-rule official on faces": (
        lambda f: ["train", "--out", f["folder"] + "/m.pt", "--dataset", f"faces:{f['folder']}", "--split-rule",
                   "official"], "a face folder has no per-image split"),
    "diagnose --split-rule sorted": (lambda f: ["diagnose", "--dataset", f["dataset"], "--models", TINY, "--out",
                                                f["out"], "--split-rule", "sorted"], "--split-rule"),
    "train --input-size native": (lambda f: ["train", "--out", f["folder"] + "/m.pt", "--input-size", "native"],
                                  "fixed HxW input size"),
    "train --loader-workers -1": (lambda f: ["train", "--out", f["folder"] + "/m.pt", "--loader-workers", "-1"],
                                  "--loader-workers"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_argument_is_one_line_and_exit_2(files, case):
    build, message = CASES[case]
    result = run_cli(build(files), case=case)
    assert message in result.err, (case, result.err)
    assert "Traceback" not in result.err


FLOW_CASES = {
    "shard_size=0": ({"shard_size": 0}, "shard_size"),
    "sides=['retreived']": ({"sides": ["retreived"]}, "sides"),
    "methods=['foo']": ({"methods": ["foo"]}, "methods"),
    "device='meta'": ({"device": "meta"}, "device"),
    "pairing='best'": ({"pairing": "best"}, "pairing"),
    "connectivity=6": ({"connectivity": 6}, "connectivity"),
    "localize_splits=['val']": ({"localize_splits": ["val"]}, "localize_splits"),
    "split_rule='random'": ({"split_rule": "random"}, "split_rule"),
    "dataset='cub:/missing'": ({"dataset": "cub:/missing"}, "dataset"),
}


@pytest.mark.parametrize("case", sorted(FLOW_CASES))
def test_flow_parameters_are_validated_where_the_flow_starts(case, tmp_path):
    """What a deployment passes goes through the same validation: the flow's parameters are checked against
    its typed config when the run is created (the form of every field), and the inputs themselves (folders,
    files, the device) when the flow starts on its worker; either way the run fails with the field named."""
    from prefect.exceptions import ParameterTypeError

    from flows.evaluate_localization import evaluate_localization

    overrides, field = FLOW_CASES[case]
    parameters = {"dataset": "synthetic", "model": TINY, "out": str(tmp_path / "run"), **overrides}
    try:
        evaluate_localization.validate_parameters({"config": parameters})
    except ParameterTypeError as refused:  # the form: caught before the run starts
        assert field in str(refused), (case, str(refused))
    else:  # the form is fine; what exists is checked at the start of the run
        with pytest.raises(ArgumentError) as refused:
            evaluate_localization.fn(parameters)
        assert refused.value.argument == field and "\n" not in str(refused.value)
    with pytest.raises(ArgumentError) as plain_call:  # a plain call validates the same way, one line
        evaluate_localization.fn(parameters)
    assert plain_call.value.argument == field and "\n" not in str(plain_call.value)
    record("evaluate_localization flow parameters", case, "clean_error")


def test_fine_tuning_resnet50_without_its_weights_is_one_line_and_exit_2(files):
    """ResNet-50's ImageNet weights are not installed offline: the paper-like configuration fails with the
    clear WeightsUnavailableError (how to get them is in docs/paper_comparison.md), no traceback, exit 2."""
    from eml_core.weights import hub_checkpoint_dir

    if any(hub_checkpoint_dir().glob("resnet50-*.pth")):
        pytest.skip("ResNet-50's ImageNet weights are in the torch hub cache on this machine")
    result = run_cli(["train", "--dataset", files["dataset"], "--out", files["folder"] + "/r50.pt", "--backbone",
                      "resnet50", "--head", "gmp_fc", "--fine-tune", "--epochs", "1", "--device", "cpu"],
                     case="train resnet50:gmp_fc --fine-tune without ImageNet weights")
    assert "pretrained ImageNet weights resnet50-" in result.err and "Traceback" not in result.err
