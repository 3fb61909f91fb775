"""The localization, training and diagnosis flows under one Prefect test harness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from eml_core.methods import DEFAULT_METHODS as METHODS
from eml_core.results import ResultsLocation, resolve_run
from eml_core.sweep import FINE_THRESHOLDS, PAPER_THRESHOLDS
from eml_core.tables import SCHEMAS

TABLES = ("localization_items", "localization_summary", "localization_best", "maxboxacc", "retrieval_metrics",
          "errors")
TINY = "tests.conftest:tiny"


def _run(root, out, **options):
    from flows.evaluate_localization import evaluate_localization
    from tasks.configs import LocalizationConfig

    return evaluate_localization(LocalizationConfig(dataset=f"cub:{root}", model=TINY, out=str(out), shard_size=4,
                                                    **options))


def _tables(out) -> dict[str, pd.DataFrame]:
    store = resolve_run(str(out), "localization")  # the latest finished run under the results root
    return {name: store.read_table(f"{name}.parquet") for name in TABLES}


def test_flow_writes_every_table_manifest_figure_and_artifact(prefect_harness, tiny_synthetic_root, tmp_path):
    result = _run(tiny_synthetic_root, tmp_path / "run")
    tables = _tables(tmp_path / "run")
    for name, table in tables.items():
        assert list(table.columns) == SCHEMAS[name].names, name
    items = tables["localization_items"]
    assert len(items) == 12 * len(METHODS) * len(FINE_THRESHOLDS)  # 12 pairs, query side, every threshold
    assert set(items["side"]) == {"query"} and items["image_id"].nunique() == 12
    summary = tables["localization_summary"]
    assert sorted(summary["threshold"].unique()) == list(PAPER_THRESHOLDS)
    assert set(summary["method"]) == set(METHODS) and (summary["count"] == 12).all()
    assert len(tables["localization_best"]) == len(METHODS)
    assert set(tables["maxboxacc"]["iou_threshold"]) == {0.3, 0.5, 0.7}
    assert set(tables["retrieval_metrics"]["split"]) == {"train", "test"}
    run = Path(resolve_run(str(tmp_path / "run"), "localization").uri)
    assert run.parent == tmp_path / "run" / "localization" and run.name == result["run_id"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["items"] == 12 and len(manifest["dataset"]["fingerprint"]) == 64
    assert manifest["checkpoint"]["spec"] == TINY and manifest["versions"]["torch"]
    assert manifest["code_version"] and manifest["config"]["shard_size"] == 4
    assert (run / "figures" / "accuracy_vs_threshold.png").stat().st_size > 1000
    assert (run / "figures" / "examples.png").stat().st_size > 1000
    assert result["best"].equals(tables["localization_best"])

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {artifact.key for artifact in client.read_artifacts()}
    assert {"localization-best", "localization-report", "localization-results"} <= keys


def test_rerun_after_a_crash_resumes_without_recomputing_finished_shards(prefect_harness, tiny_synthetic_root,
                                                                         tmp_path, monkeypatch):
    import tasks.localization as shard_tasks

    real = shard_tasks.localize_pairs
    calls = []

    def crash_on_third_shard(model, pairs, **kwargs):
        calls.append([p.pair_id for p in pairs])
        if len(calls) == 3:
            raise RuntimeError("simulated crash part-way through the run")
        return real(model, pairs, **kwargs)

    monkeypatch.setattr(shard_tasks, "localize_pairs", crash_on_third_shard)
    with pytest.raises(Exception, match="simulated crash"):
        _run(tiny_synthetic_root, tmp_path / "crashed")
    assert len(calls) == 3 and not (tmp_path / "crashed" / "localization" / "latest.json").exists()

    calls.clear()
    monkeypatch.setattr(shard_tasks, "localize_pairs",
                        lambda model, pairs, **kw: calls.append(1) or real(model, pairs, **kw))
    _run(tiny_synthetic_root, tmp_path / "crashed")
    assert len(calls) == 1  # only the shard that crashed
    manifest = resolve_run(str(tmp_path / "crashed"), "localization").read_json("manifest.json")
    assert manifest["shards_computed_this_run"] == 1

    monkeypatch.setattr(shard_tasks, "localize_pairs", real)
    _run(tiny_synthetic_root, tmp_path / "clean")
    resumed, clean = _tables(tmp_path / "crashed"), _tables(tmp_path / "clean")
    for name in TABLES:
        pd.testing.assert_frame_equal(resumed[name], clean[name], obj=name)


def test_bad_input_lands_in_errors_and_the_run_completes(prefect_harness, tiny_synthetic_root, tmp_path):
    root = tmp_path / "data" / "CUB_200_2011"
    shutil.copytree(tiny_synthetic_root, root)
    images = dict(line.split() for line in (root / "images.txt").read_text().splitlines())
    truncated = root / "images" / images["2"]
    truncated.write_bytes(truncated.read_bytes()[:400])  # header readable, pixels not
    boxes = (root / "bounding_boxes.txt").read_text().splitlines()
    boxes[4] = "5 not a box"
    boxes[5] = "6 9000 9000 10 10"
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")

    _run(root.parent, tmp_path / "run")
    errors = _tables(tmp_path / "run")["errors"]
    by_item = errors[errors["severity"] == "error"].groupby("item")["stage"].apply(set).to_dict()
    assert by_item["5"] == {"load_dataset"} and by_item["6"] == {"load_dataset"}
    assert "embed" in by_item["2"]
    assert errors[errors["item"] == "2"]["problem"].str.contains("truncated or corrupt").any()
    items = _tables(tmp_path / "run")["localization_items"]
    assert not set(items["image_id"]) & {"2", "5", "6"}
    assert items["image_id"].nunique() >= 6  # the rest went on


def test_results_on_s3(prefect_harness, s3_endpoint, tiny_synthetic_root):
    import boto3

    boto3.client("s3").create_bucket(Bucket="eml-results")
    location = "s3://eml-results/runs/tiny"
    _run(tiny_synthetic_root, location, methods=["decomposition", "gradcam"])
    store = resolve_run(location, "localization")
    best = store.read_table("localization_best.parquet")
    assert set(best["method"]) == {"decomposition", "gradcam"}
    assert store.read_json("manifest.json")["shards_computed_this_run"] > 0
    cache = ResultsLocation(location).child("localization")  # the shard cache beside the runs
    assert any(name.startswith("shards/localization/decomposition/") for name in cache.list("shards"))
    _run(tiny_synthetic_root, location, methods=["decomposition", "gradcam"])
    store = resolve_run(location, "localization")  # the second run, in a folder of its own
    assert store.read_json("manifest.json")["shards_computed_this_run"] == 0  # resumed from S3


def test_train_and_diagnose_flows(prefect_harness, tiny_synthetic_root, tmp_path):
    from eml_core import load_model
    from flows.diagnose import diagnose_models
    from flows.train import train
    from tasks.configs import DiagnoseConfig, TrainConfig

    checkpoints = []
    for loss in ("multi_similarity", "triplet"):
        path = tmp_path / f"{loss}.pt"
        result = train(TrainConfig(dataset=f"cub:{tiny_synthetic_root}", checkpoint=str(path),
                                   training={"loss": loss, "epochs": 2, "embedding_dim": 16}))
        assert load_model(path).config["training"]["loss"] == loss
        assert set(result["retrieval_metrics"]["k"]) == {1, 2, 4, 8}
        checkpoints.append(str(path))
    table = diagnose_models(DiagnoseConfig(dataset=f"cub:{tiny_synthetic_root}", models=checkpoints,
                                           out=str(tmp_path / "diag"), methods=("decomposition", "gradcam"),
                                           shard_size=8))
    assert list(table.columns) == SCHEMAS["diagnosis"].names
    assert len(table) == 4 and set(table["model"]) == {"multi_similarity", "triplet"}
    reference = table[table["model"] == "multi_similarity"]
    assert (reference["accuracy_drop_vs_reference"] == 0).all()
    assert table["recall_at_1_train"].between(0, 1).all()
    assert (Path(resolve_run(str(tmp_path / "diag"), "diagnosis").uri) / "diagnosis.parquet").exists()


def test_runs_are_kept_with_a_latest_pointer_and_a_catalog(prefect_harness, tiny_synthetic_root, tmp_path):
    """Two runs into one results root: two folders, two catalog rows, ``latest`` at the second; concurrent
    catalog appends (one file per run) lose no row."""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.runs import finish_run, read_catalog, start_run

    first = _run(tiny_synthetic_root, tmp_path / "root", methods=("decomposition",))
    second = _run(tiny_synthetic_root, tmp_path / "root", methods=("decomposition",))
    assert first["run_id"] != second["run_id"] and first["run_id"] < second["run_id"]
    runs = sorted(p.name for p in (tmp_path / "root" / "localization").iterdir() if p.is_dir() and p.name != "shards")
    assert runs == [first["run_id"], second["run_id"]]
    assert resolve_run(str(tmp_path / "root"), "localization").uri.endswith(second["run_id"])
    catalog = read_catalog(str(tmp_path / "root"))
    assert list(catalog["run_id"]) == [first["run_id"], second["run_id"]]
    assert json.loads(catalog["headline"].iloc[1])["best_accuracy/decomposition"] >= 0
    assert json.loads(catalog["parameters"].iloc[0])["methods"] == ["decomposition"]
    assert second["manifest"]["shards_computed_this_run"] == 0  # the shard cache is shared by the runs

    def register(n: int) -> None:
        finish_run(start_run("localization", str(tmp_path / "root")), {"config": {"n": n}})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(register, range(16)))
    assert len(read_catalog(str(tmp_path / "root"))) == 18
