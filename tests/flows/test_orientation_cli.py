"""`eml train-crossview` and `eml evaluate orientation`: a run end to end, factory checkpoints, bad arguments."""

from __future__ import annotations

import pytest

from tests.hostile.harness import run_cli

TINY = "tests.conftest:tiny_crossview_factory"


def test_train_crossview_then_evaluate_orientation_with_its_checkpoint(prefect_harness, tiny_crossview_root,
                                                                       tmp_path):
    from eml_core.crossview_model import load_crossview_model
    from eml_core.results import resolve_run

    checkpoint = tmp_path / "crossview.pt"
    trained = run_cli(["train-crossview", "--dataset", f"cvusa:{tiny_crossview_root}", "--out", str(checkpoint),
                       "--epochs", "2", "--panorama-size", "32x176", "--aerial-size", "64x64", "--embedding-dim", "16",
                       "--batch-size", "4", "--rotations-per-aerial", "2", "--device", "cpu"], expect="ok")
    assert trained.code == 0, trained.err
    assert "validation Recall@K (street -> aerial, 2 pairs): R@1" in trained.out and str(checkpoint) in trained.out
    model = load_crossview_model(checkpoint)  # a builtin two-branch network: no factory needed to load it
    assert model.shares_projection and model.config["training"]["epochs"] == 2
    assert model.config["training"]["panorama_size"] == [32, 176] and model.street.preprocessing.input_size == (32, 176)

    result = run_cli(["evaluate", "orientation", "--dataset", f"cvusa:{tiny_crossview_root}", "--model",
                      str(checkpoint), "--out", str(tmp_path / "runs"), "--rotations", "0,120", "--examples", "1",
                      "--overall-maps", "decomposition", "--top-k", "0", "--device", "cpu"], expect="ok")
    assert result.code == 0, result.err
    assert "| decomposition | point_specific |" in result.out and "2 pairs, 4 rotated pairs" in result.out
    run = resolve_run(str(tmp_path / "runs"), "orientation")
    items = run.read_table("orientation_items.parquet")
    assert set(items["method"]) == {"overall", "point_specific"} and set(items["rotation"]) == {0.0, 120.0}
    assert run.read_json("manifest.json")["checkpoint"]["spec"] == str(checkpoint)


def test_a_factory_checkpoint_runs_only_with_model_factory(prefect_harness, tiny_crossview, tiny_crossview_root,
                                                           tmp_path, monkeypatch):
    from eml_core.crossview_model import save_crossview_model

    monkeypatch.setenv("EML_TRUSTED_FACTORIES", "tests.conftest:tiny")  # restored after the test
    checkpoint = save_crossview_model(tiny_crossview, tmp_path / "tiny.pt")
    argv = ["evaluate", "orientation", "--dataset", f"cvusa:{tiny_crossview_root}", "--model", str(checkpoint),
            "--out", str(tmp_path / "runs"), "--examples", "0", "--device", "cpu"]
    refused = run_cli(argv, case="a checkpoint naming a factory, without --model-factory")
    assert "a file never chooses code to run" in refused.err and TINY in refused.err
    accepted = run_cli([*argv, "--model-factory", TINY], expect="ok")
    assert accepted.code == 0, accepted.err
    assert "| decomposition | point_specific |" in accepted.out


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_crossview_root):
    from eml_core import save_model
    from tests.conftest import tiny_model

    folder = tmp_path_factory.mktemp("orientation_arguments")
    (folder / "a_file.txt").write_text("not a folder")
    single = save_model(tiny_model("gap_fc"), folder / "single.pt")
    return {"dataset": f"cvusa:{tiny_crossview_root}", "out": str(folder / "runs"), "file": str(folder / "a_file.txt"),
            "folder": str(folder), "single": str(single)}


def _evaluate(places, *extra, model: str = TINY):
    return ["evaluate", "orientation", "--dataset", places["dataset"], "--model", model, "--out", places["out"], *extra]


def _train(places, *extra):
    return ["train-crossview", "--dataset", places["dataset"], "--out", places["folder"] + "/m.pt", *extra]


CASES = {
    # (argv builder, text the one-line error must contain)
    "orientation --rotations 0,abc": (lambda p: _evaluate(p, "--rotations", "0,abc"),
                                      "--rotations: expected comma-separated angles"),
    "orientation --rotations 0,nan": (lambda p: _evaluate(p, "--rotations", "0,nan"), "--rotations: expected finite"),
    "orientation --rotations 10,10": (lambda p: _evaluate(p, "--rotations", "10,10"), "--rotations: an angle is "
                                                                                       "repeated"),
    "orientation --rotations with --random-rotations": (
        lambda p: _evaluate(p, "--rotations", "0,30", "--random-rotations", "2"), "not both"),
    "orientation --random-rotations 0": (lambda p: _evaluate(p, "--random-rotations", "0"), "--random-rotations"),
    "orientation --overall-maps gradcam": (lambda p: _evaluate(p, "--overall-maps", "gradcam"),
                                           "--overall-maps: unknown overall map 'gradcam'"),
    "orientation --fill circle": (lambda p: _evaluate(p, "--fill", "circle"), "--fill"),
    "orientation --top-k -1": (lambda p: _evaluate(p, "--top-k", "-1"), "--top-k"),
    "orientation --max-pairs 0": (lambda p: _evaluate(p, "--max-pairs", "0"), "--max-pairs"),
    "orientation --split ../etc": (lambda p: _evaluate(p, "--split", "../etc"), "--split: expected a split name"),
    "orientation --device tpu": (lambda p: _evaluate(p, "--device", "tpu"), "--device"),
    "orientation --dataset cub:/x": (lambda p: ["evaluate", "orientation", "--dataset", "cub:/x", "--out", p["out"]],
                                     "--dataset: cross-view dataset spec 'cub:/x'"),
    "orientation --dataset cvusa:/no/such/folder": (
        lambda p: ["evaluate", "orientation", "--dataset", "cvusa:/no/such/folder", "--out", p["out"]],
        "does not exist"),
    "orientation --dataset cvact:FOLDER --split val": (
        lambda p: ["evaluate", "orientation", "--dataset", f"cvact:{p['folder']}", "--out", p["out"], "--split", "val"],
        "--split: CVACT pairs are all in split 'all'"),
    "orientation --model mobilenet_v2:gap_fc": (lambda p: _evaluate(p, model="mobilenet_v2:gap_fc"),
                                                "name the backbone alone"),
    "orientation --model missing.pt": (lambda p: _evaluate(p, model="missing.pt"), "--model"),
    "orientation --model a single-branch checkpoint": (lambda p: _evaluate(p, model=p["single"]),
                                                       "is a single-branch model checkpoint"),
    "orientation --out names an existing file": (lambda p: ["evaluate", "orientation", "--dataset", p["dataset"],
                                                            "--out", p["file"]], "exists and is not a folder"),
    "orientation --model-factory os.system": (lambda p: _evaluate(p, "--model-factory", "os.system"),
                                              "--model-factory: expected package.module:function"),
    "train-crossview --epochs 0": (lambda p: _train(p, "--epochs", "0"), "--epochs"),
    "train-crossview --panorama-size 0x10": (lambda p: _train(p, "--panorama-size", "0x10"), "--panorama-size"),
    "train-crossview --aerial-size native": (lambda p: _train(p, "--aerial-size", "native"),
                                             "--aerial-size: expected HxW"),
    "train-crossview --batch-size 1": (lambda p: _train(p, "--batch-size", "1"), "--batch-size"),
    "train-crossview --backbone resnet9": (lambda p: _train(p, "--backbone", "resnet9"),
                                           "--backbone: unknown backbone 'resnet9'"),
    "train-crossview --learning-rate nan": (lambda p: _train(p, "--learning-rate", "nan"), "--learning-rate"),
    "train-crossview --dataset synthetic:FILE": (
        lambda p: ["train-crossview", "--dataset", "cvusa:" + p["file"], "--out", p["folder"] + "/m.pt"],
        "does not exist"),
    "train-crossview --out names a folder": (lambda p: ["train-crossview", "--out", p["folder"]],
                                             "is a folder; expected a checkpoint file"),
    "train-crossview --device meta": (lambda p: _train(p, "--device", "meta"), "--device"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_arguments_give_one_line_and_exit_2(case, places):
    build, expected = CASES[case]
    result = run_cli(build(places), case=case)
    assert expected in result.err, result.err
