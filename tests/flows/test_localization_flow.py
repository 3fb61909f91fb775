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

    options.setdefault("shard_size", 4)
    return evaluate_localization(LocalizationConfig(dataset=f"cub:{root}", model=TINY, out=str(out), **options))


def _tables(out) -> dict[str, pd.DataFrame]:
    store = resolve_run(str(out), "localization")  # the latest finished run under the results root
    return {name: store.read_table(f"{name}.parquet") for name in TABLES}


def test_flow_writes_every_table_manifest_figure_and_artifact(prefect_harness, tiny_synthetic_root, tmp_path):
    """The paper's protocol by default: class split (classes 1-2 train, 3-4 evaluate), Tables I/II on the 8
    evaluation images only, each paired with a random same-class image, both images of every pair scored."""
    result = _run(tiny_synthetic_root, tmp_path / "run")
    tables = _tables(tmp_path / "run")
    for name, table in tables.items():
        assert list(table.columns) == SCHEMAS[name].names, name
    items = tables["localization_items"]
    assert len(items) == 8 * 2 * len(METHODS) * len(FINE_THRESHOLDS)  # 8 pairs, both sides, every threshold
    assert set(items["side"]) == {"query", "retrieved"} and items["image_id"].nunique() == 8
    assert set(items["split"]) == {"test"} and set(items["label"]) == {3, 4}  # no training image, no seen class
    summary = tables["localization_summary"]
    assert sorted(summary["threshold"].unique()) == list(PAPER_THRESHOLDS)
    assert set(summary["method"]) == set(METHODS) and (summary["count"] == 16).all()
    assert len(tables["localization_best"]) == len(METHODS)
    assert set(tables["maxboxacc"]["iou_threshold"]) == {0.3, 0.5, 0.7}
    assert set(tables["retrieval_metrics"]["split"]) == {"train", "test"}
    run = Path(resolve_run(str(tmp_path / "run"), "localization").uri)
    assert run.parent == tmp_path / "run" / "localization" and run.name == result["run_id"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["items"] == 16 and len(manifest["dataset"]["fingerprint"]) == 64
    assert manifest["dataset"]["split_rule"] == "classes" and manifest["protocol"]["table_splits"] == ["test"]
    assert manifest["protocol"]["pairing"] == "random" and manifest["protocol"]["sides"] == ["query", "retrieved"]
    assert manifest["protocol"]["methods"]["decomposition_pairwise"] == "Decomposition"
    assert result["catalog"]["split_rule"] == "classes"
    from tasks.summary import markdown_report

    report = markdown_report(result, "tiny")
    assert "class-disjoint split" in report and "on the test split only" in report
    assert "seeded random same-class partner (seed 0)" in report and "both images of every pair" in report
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
        _run(tiny_synthetic_root, tmp_path / "crashed", shard_size=3)  # 8 evaluation pairs: 3 shards
    assert len(calls) == 3 and not (tmp_path / "crashed" / "localization" / "latest.json").exists()

    calls.clear()
    monkeypatch.setattr(shard_tasks, "localize_pairs",
                        lambda model, pairs, **kw: calls.append(1) or real(model, pairs, **kw))
    _run(tiny_synthetic_root, tmp_path / "crashed", shard_size=3)
    assert len(calls) == 1  # only the shard that crashed
    manifest = resolve_run(str(tmp_path / "crashed"), "localization").read_json("manifest.json")
    assert manifest["shards_computed_this_run"] == 1

    monkeypatch.setattr(shard_tasks, "localize_pairs", real)
    _run(tiny_synthetic_root, tmp_path / "clean", shard_size=3)
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
    assert items["image_id"].nunique() == 8  # the evaluation split (classes 3-4) went on


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
    tables = []
    for models in (checkpoints, checkpoints[::-1]):  # the order of --models must not matter
        tables.append(diagnose_models(DiagnoseConfig(dataset=f"cub:{tiny_synthetic_root}", models=models,
                                                     out=str(tmp_path / "diag"), methods=("decomposition", "gradcam"),
                                                     shard_size=8)))
    table = tables[0]
    assert list(table.columns) == SCHEMAS["diagnosis"].names
    assert len(table) == 4 and set(table["model"]) == {"multi_similarity", "triplet"}
    assert set(table["loss"]) == {"multi_similarity", "triplet"} and set(table["reference_model"]) == {
        "multi_similarity"}
    reference = table[table["model"] == "multi_similarity"]
    assert (reference["accuracy_drop_vs_reference"] == 0).all()
    by_model = table.set_index(["model", "method"])["train_localization_accuracy"]
    for method in ("decomposition", "gradcam"):  # the drop is Multi-Similarity minus Triplet
        expected = by_model[("multi_similarity", method)] - by_model[("triplet", method)]
        assert table.set_index(["model", "method"]).loc[("triplet", method), "accuracy_drop_vs_reference"] == \
            pytest.approx(expected)
    key = ["model", "method"]
    pd.testing.assert_frame_equal(tables[0].sort_values(key).reset_index(drop=True),
                                  tables[1].sort_values(key).reset_index(drop=True))
    assert table["recall_at_1_train"].between(0, 1).all()
    diagnosis_run = Path(resolve_run(str(tmp_path / "diag"), "diagnosis").uri)
    assert (diagnosis_run / "diagnosis.parquet").exists()
    assert json.loads((diagnosis_run / "manifest.json").read_text())["split_rule"] == "classes"


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


def test_the_report_says_where_two_columns_coincide_and_why():
    from tasks.summary import coincidence_notes

    summary = pd.DataFrame({"method": ["gradcam_nonorm", "decomposition_bias", "gradcam"] * 2,
                            "threshold": [0.2] * 3 + [0.5] * 3, "accuracy": [0.4, 0.4, 0.1, 0.6, 0.6, 0.2],
                            "count": [10] * 6})
    gap = coincidence_notes(summary, {"model": {"head": "gap_fc"}})
    assert len(gap) == 1 and "`decomposition_bias` and `gradcam_nonorm` coincide" in gap[0] and "Section V" in gap[0]
    gmp = coincidence_notes(summary, {"model": {"head": "gmp_fc"}})
    assert len(gmp) == 1 and "Section V" not in gmp[0]  # equal here by chance, not by the GAP identity
    summary.loc[0, "accuracy"] = 0.45
    assert coincidence_notes(summary, {"model": {"head": "gap_fc"}}) == []
