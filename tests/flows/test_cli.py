"""`eml explain` / `eml demo` end to end, on tiny models, generated images and the paper's demo inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from flows.cli import main
from tests.conftest import shared_data

MAP_NAMES = [f"{side}_{method}" for side in ("query", "retrieved")
             for method in ("decomposition", "decomposition_bias", "decomposition_pairwise", "gradcam",
                            "gradcam_nonorm")]


def _image(path, size=(40, 56), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65536, size, dtype=np.uint16)).save(path)
    elif mode == "L":
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(path)
    else:
        channels = 4 if mode == "RGBA" else 3
        Image.fromarray(rng.integers(0, 256, (*size, channels), dtype=np.uint8)).save(path)
    return path


def test_explain_writes_every_map_and_a_summary(tmp_path, capsys):
    q, r = _image(tmp_path / "q.png"), _image(tmp_path / "r.png", size=(48, 36), seed=1)
    out = tmp_path / "out"
    code = main(["explain", str(q), str(r), "--model", "tests.conftest:tiny", "--out", str(out),
                 "--point-query", "10,20", "--point-retrieved", "35,47"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "explanation.json").read_text())
    assert abs(summary["completeness_residual"]) < 1e-5
    assert -1 <= summary["similarity"] <= 1
    assert summary["model"] == "tests.conftest:tiny" and summary["decomposition_method"] == "closed_form"
    names = MAP_NAMES + ["point_specific_query_point_on_retrieved", "point_specific_retrieved_point_on_query"]
    for name in names:
        raw = np.load(out / f"{name}.npy")
        assert raw.ndim == 2 and np.isfinite(raw).all()
        side = summary["maps"][name]["image"]
        png = Image.open(out / f"{name}.png")
        assert png.size[::-1] == tuple(summary["image_sizes"][side])  # overlays at the original image size
    assert np.load(out / "point_to_point.npy").shape == tuple(summary["maps"]["point_to_point"]["shape"])
    assert "similarity (cosine)" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_explain_accepts_grayscale_rgba_and_16_bit(tmp_path, mode):
    q = _image(tmp_path / "q.png", mode=mode)
    r = _image(tmp_path / "r.png", seed=2)
    assert main(["explain", str(q), str(r), "--model", "tests.conftest:tiny", "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "explanation.json").read_text())
    assert summary["dropped_alpha"]["query"] == (mode == "RGBA")


def test_bad_inputs_exit_2_with_the_file_or_argument_named(tmp_path, capsys):
    good = _image(tmp_path / "good.png")
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 90).save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    cases = [
        (["explain", str(truncated), str(good), "--model", "tests.conftest:tiny"], "truncated.jpg"),
        (["explain", str(good), str(tmp_path / "missing.png"), "--model", "tests.conftest:tiny"],
         "missing.png: file does not exist"),
        (["explain", str(good), str(good), "--model", "tests.conftest:tiny", "--point-query", "56,3"],
         "--point-query: point (56, 3) is outside"),
        (["explain", str(good), str(good), "--model", "tests.conftest:tiny", "--point-retrieved", "3"],
         "Invalid value for '--point-retrieved': expected X,Y"),
        (["explain", str(good), str(good), "--model", "resnet9:gap"],
         "model spec 'resnet9:gap': unknown backbone 'resnet9'"),
        (["explain", str(good), str(good), "--model", "tests.conftest:tiny", "--input-size", "2x2"],
         "smaller than the backbone's stride of 4"),
        (["explain", str(good), str(good), "--model", "tests.conftest:tiny", "--device", "tpu"], "--device"),
    ]
    for argv, message in cases:
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_demo_explanation_of_the_builtin_example(tmp_path):
    from eml_core.examples import write_example_pair
    from tasks.configs import DemoConfig, ExplainConfig
    from tasks.explain import explain

    query, retrieved = write_example_pair(tmp_path / "inputs")
    summary = explain.fn(ExplainConfig(query=str(query), retrieved=str(retrieved), model=DemoConfig().explain_model,
                                       out=str(tmp_path), point_query=(190.0, 110.0)))
    assert summary["model_config"]["pretrained"] is True
    assert abs(summary["completeness_residual"]) < 1e-5
    assert (tmp_path / "query_decomposition.png").exists()


def test_evaluate_localization_command(prefect_harness, tiny_synthetic_root, tmp_path, capsys):
    code = main(["evaluate", "localization", "--dataset", f"cub:{tiny_synthetic_root}", "--model",
                 "tests.conftest:tiny", "--out", str(tmp_path / "run"), "--methods", "decomposition,gradcam",
                 "--shard-size", "6"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Table I" in out and "| decomposition |" in out and str(tmp_path / "run") in out
    run = next((tmp_path / "run" / "localization").glob("2*"))  # the run folder, named by its time-sortable id
    assert (run / "localization_summary.parquet").exists()


def test_evaluate_with_a_bad_dataset_spec_exits_2(capsys):
    assert main(["evaluate", "localization", "--dataset", "imagenet:/x", "--model", "m", "--out", "o"]) == 2
    assert "dataset spec 'imagenet:/x'" in capsys.readouterr().err


PAPER_PAIRS = {
    "image_retrieval": ("Image_Retrieval/Images/51.jpg", "Image_Retrieval/Images/52.jpg", None),
    "person_reid": ("Person_Re-identification/Images/1501_c3s3_075419_03.jpg",
                    "Person_Re-identification/Images/1501_c6s4_001877_00.jpg", "256x128"),
    "face_verification": ("Face_Verification/Images/Abel_Pacheco_0001.jpg",
                          "Face_Verification/Images/Abel_Pacheco_0004.jpg", None),
    # street-view panorama against the aerial image, each at its own size (different shapes on the two sides)
    "geo_localization": ("Geo-localization/Images/0013073_grd.jpg", "Geo-localization/Images/0013073_sat.jpg",
                         "native"),
}


@pytest.mark.parametrize("name", sorted(PAPER_PAIRS))
def test_paper_demo_inputs_run_through_eml_explain(name, tmp_path, capsys):
    root = shared_data("paper_demo")
    query, retrieved, input_size = PAPER_PAIRS[name]
    argv = ["explain", str(root / query), str(root / retrieved), "--model", "mobilenet_v2:gap_fc",
            "--out", str(tmp_path), "--point-query", "5,5"]
    if input_size:
        argv += ["--input-size", input_size]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "explanation.json").read_text())
    assert abs(summary["completeness_residual"]) < 1e-5 * max(1.0, abs(summary["similarity"]))
    for map_name in MAP_NAMES:
        assert np.isfinite(np.load(tmp_path / f"{map_name}.npy")).all()
    if input_size == "native":
        assert summary["feature_sizes"]["query"] != summary["feature_sizes"]["retrieved"]
        assert summary["input_sizes"]["query"] == summary["image_sizes"]["query"]
