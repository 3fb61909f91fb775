"""The cross-view orientation flow (paper Section VII-A): tables, figures, manifest, catalog, resume, bad input,
and its deployments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from eml_core.results import resolve_run
from eml_core.tables import SCHEMAS
from tests.hostile.harness import record

TABLES = ("orientation_items", "orientation_summary", "orientation_histogram", "errors")
TINY = "tests.conftest:tiny_crossview_factory"
METHODS = {"overall", "point_specific", "point_specific_top10"}
ROOT = Path(__file__).resolve().parents[2]


def _run(dataset_root, out, **options):
    from flows.evaluate_orientation import evaluate_orientation
    from tasks.configs import OrientationConfig

    values = {"shard_size": 1, "examples": 1, "device": "cpu", **options}
    if "rotations" not in values:
        values.setdefault("random_rotations", 2)
    return evaluate_orientation(OrientationConfig(dataset=f"cvusa:{dataset_root}", model=TINY, out=str(out), **values))


def _tables(out) -> dict[str, pd.DataFrame]:
    store = resolve_run(str(out), "orientation")  # the latest finished run under the results root
    return {name: store.read_table(f"{name}.parquet") for name in TABLES}


def test_flow_writes_every_table_figure_manifest_and_catalog_row(prefect_harness, tiny_crossview_root,
                                                                  tiny_crossview, tmp_path):
    from eml_core.crossview_data import load_cvusa
    from eml_core.orientation import random_rotations
    from eml_core.orientation_evaluation import estimate_orientation
    from tasks.runs import read_catalog

    result = _run(tiny_crossview_root, tmp_path / "root")
    tables = _tables(tmp_path / "root")
    for name, table in tables.items():
        assert list(table.columns) == SCHEMAS[name].names, name

    # the flow's rows are the library's: 2 val pairs x 2 angles drawn per pair id x 2 overall maps x 3 methods
    pairs = load_cvusa(tiny_crossview_root, splits="val").pairs
    angles = random_rotations([p.pair_id for p in pairs], 2, seed=0)
    expected, _ = estimate_orientation(tiny_crossview, pairs, angles, overall_maps=("decomposition",
                                                                                    "decomposition_bias"))
    items = tables["orientation_items"]
    assert len(items) == 2 * 2 * 2 * 3 and set(items["method"]) == METHODS and set(items["split"]) == {"val"}
    expected = pd.DataFrame(expected).sort_values(["pair_id", "rotation", "overall_map", "method"], kind="stable")
    pd.testing.assert_frame_equal(items[["pair_id", "rotation", "estimate", "error"]].reset_index(drop=True),
                                  expected[["pair_id", "rotation", "estimate", "error"]].reset_index(drop=True),
                                  check_exact=False, atol=1e-6)

    summary, histogram = tables["orientation_summary"], tables["orientation_histogram"]
    assert len(summary) == 6 and (summary["count"] == 4).all()
    assert len(histogram) == 6 * 52  # bins centred on -175 ... 175 and the wrapping one at 180
    shares = histogram.groupby(["overall_map", "method"])["share"].sum()
    assert np.allclose(shares.to_numpy(), 1.0)
    centre = histogram[histogram["bin_centre"] == 0].set_index(["overall_map", "method"])["share"]
    assert np.allclose(summary.set_index(["overall_map", "method"])["within_3_5"].sort_index(), centre.sort_index())

    run = Path(resolve_run(str(tmp_path / "root"), "orientation").uri)
    assert run.parent == tmp_path / "root" / "orientation" and run.name == result["run_id"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["pairs"] == 2 and manifest["rotated_pairs"] == 4 and manifest["dataset"]["split"] == "val"
    assert manifest["rotations"] == {"random_per_pair": 2, "seed": 0}
    assert manifest["checkpoint"]["spec"] == TINY and manifest["code_version"] and manifest["versions"]["torch"]
    assert manifest["shards_computed_this_run"] == 2 and manifest["throughput"]["rotated_pairs"] == 4
    for figure in ("histogram_decomposition.png", "histogram_decomposition_bias.png"):
        assert (run / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    examples = list((run / "figures").glob("example_*.png"))
    assert len(examples) == 1 and Image.open(examples[0]).size[0] > 500
    assert sorted(manifest["figures"]) == sorted(f"figures/{p.name}" for p in (run / "figures").iterdir())

    catalog = read_catalog(str(tmp_path / "root"))
    assert list(catalog["run_id"]) == [result["run_id"]] and catalog["kind"].iloc[0] == "orientation"
    headline = json.loads(catalog["headline"].iloc[0])
    by_method = summary[summary["overall_map"] == "decomposition"].set_index("method")
    assert headline["within_3_5/point_specific"] == pytest.approx(by_method.loc["point_specific", "within_3_5"])
    assert headline["median_abs_error/overall"] == pytest.approx(by_method.loc["overall", "median_abs_error"])
    assert "within_3_5/decomposition_bias/point_specific" in headline

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {artifact.key for artifact in client.read_artifacts()}
    assert {"orientation-summary", "orientation-report", "orientation-results"} <= keys


def test_explicit_rotations_and_a_rerun_that_resumes_from_the_shard_cache(prefect_harness, tiny_crossview_root,
                                                                          tmp_path, monkeypatch):
    import tasks.orientation as shard_tasks

    real = shard_tasks.estimate_orientation
    calls = []

    def crash_on_second_shard(model, pairs, *args, **kwargs):
        calls.append([p.pair_id for p in pairs])
        if len(calls) == 2:
            raise RuntimeError("simulated crash part-way through the run")
        return real(model, pairs, *args, **kwargs)

    options = {"rotations": (0.0, 90.0, 200.0), "examples": 0}
    monkeypatch.setattr(shard_tasks, "estimate_orientation", crash_on_second_shard)
    with pytest.raises(Exception, match="simulated crash"):
        _run(tiny_crossview_root, tmp_path / "crashed", **options)
    assert len(calls) == 2 and not (tmp_path / "crashed" / "orientation" / "latest.json").exists()

    calls.clear()
    monkeypatch.setattr(shard_tasks, "estimate_orientation",
                        lambda model, pairs, *a, **kw: calls.append(1) or real(model, pairs, *a, **kw))
    resumed = _run(tiny_crossview_root, tmp_path / "crashed", **options)
    assert len(calls) == 1 and resumed["manifest"]["shards_computed_this_run"] == 1  # only the shard that crashed
    again = _run(tiny_crossview_root, tmp_path / "crashed", **options)
    assert len(calls) == 1 and again["manifest"]["shards_computed_this_run"] == 0   # a second run: all cached
    assert again["manifest"]["rotations"] == {"angles": [0.0, 90.0, 200.0]}

    monkeypatch.setattr(shard_tasks, "estimate_orientation", real)
    _run(tiny_crossview_root, tmp_path / "clean", **options)
    items = _tables(tmp_path / "crashed")["orientation_items"]
    assert sorted(set(items["rotation"])) == [0.0, 90.0, 200.0] and (items["truth"] == items["rotation"]).all()
    for name in TABLES:
        pd.testing.assert_frame_equal(_tables(tmp_path / "crashed")[name], _tables(tmp_path / "clean")[name], obj=name)


def _bad_copy(source: Path, target: Path) -> Path:
    """The tiny pairs plus bad val lines: a panorama of the wrong aspect, a missing aerial file, a non-square
    aerial image, a truncated panorama (header readable, pixels not); and an empty test split."""
    root = target / "CVUSA"
    shutil.copytree(source, root)
    panorama = Image.open(root / "streetview/panos/0000001.png")
    aerial = Image.open(root / "bingmap/19/0000001.png")
    panorama.resize((64, 64)).save(root / "streetview/panos/square.png")
    aerial.save(root / "bingmap/19/for_square.png")
    panorama.save(root / "streetview/panos/orphan.png")
    panorama.save(root / "streetview/panos/wide.png")
    aerial.resize((96, 64)).save(root / "bingmap/19/wide.png")
    panorama.save(root / "streetview/panos/truncated.png")
    data = (root / "streetview/panos/truncated.png").read_bytes()
    (root / "streetview/panos/truncated.png").write_bytes(data[:len(data) // 3])
    aerial.save(root / "bingmap/19/for_truncated.png")
    with (root / "splits/val-19zl.csv").open("a") as split:
        split.write("bingmap/19/for_square.png,streetview/panos/square.png\n"
                    "bingmap/19/missing.png,streetview/panos/orphan.png\n"
                    "bingmap/19/wide.png,streetview/panos/wide.png\n"
                    "bingmap/19/for_truncated.png,streetview/panos/truncated.png\n")
    (root / "splits/test-19zl.csv").write_text("")
    return root


def test_bad_input_lands_in_errors_and_the_run_completes(prefect_harness, tiny_crossview_root, tmp_path):
    root = _bad_copy(tiny_crossview_root, tmp_path / "data")
    result = _run(root, tmp_path / "run", examples=2)
    tables = _tables(tmp_path / "run")
    errors = tables["errors"]
    problems = {item: f"{file}: {problem}" for item, file, problem in zip(errors["item"], errors["file"],
                                                                          errors["problem"], strict=True)}
    cases = {"panorama of the wrong aspect": ("square", "aspect"),
             "missing aerial file": ("orphan", "missing.png: image file does not exist"),
             "non-square aerial image": ("wide", "not square"), "truncated panorama": ("truncated", "truncated.png")}
    for case, (pair_id, text) in cases.items():
        landed = pair_id in problems and text in problems[pair_id]
        record("flow evaluate_orientation", case, "errors_row" if landed else "data_lost")
        assert landed, (case, problems)
    assert set(errors[errors["item"] == "truncated"]["stage"]) == {"orientation"}  # found when decoded
    items = tables["orientation_items"]
    assert set(items["pair_id"]) == {"0000005", "0000006"} and len(items) == 2 * 2 * 2 * 3  # the rest went on
    assert result["manifest"]["errors"] == 4 and len(result["figures"]) == 4

    empty = _run(root, tmp_path / "empty", split="test")
    errors = _tables(tmp_path / "empty")["errors"]
    landed = errors["problem"].str.contains("split file lists no pairs").any() and \
        errors["problem"].str.contains("split 'test' has no usable pairs").any()
    record("flow evaluate_orientation", "empty split", "errors_row" if landed else "data_lost")
    assert landed, errors["problem"].tolist()
    assert len(_tables(tmp_path / "empty")["orientation_items"]) == 0 and empty["figures"] == []
    assert resolve_run(str(tmp_path / "empty"), "orientation").uri.endswith(empty["run_id"])  # the run completed


def test_deployments_nightly_orientation_and_train_crossview():
    from tasks.configs import CrossViewTrainConfig, OrientationConfig

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    nightly = deployments["nightly-orientation"]
    assert nightly["entrypoint"] == "flows/evaluate_orientation.py:evaluate_orientation"
    assert all(schedule["active"] is False for schedule in nightly["schedules"])  # switched on by the operator
    config = OrientationConfig(**nightly["parameters"]["config"])
    assert config.dataset.startswith("cvusa:") and config.random_rotations == 1 and config.split_name == "val"
    training = CrossViewTrainConfig(**deployments["train-crossview"]["parameters"]["config"])
    assert deployments["train-crossview"]["entrypoint"] == "flows/train_crossview.py:train_crossview"
    assert training.training.fine_tune and training.training.panorama_size == (224, 1232)
