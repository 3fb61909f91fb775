"""The evaluate_faithfulness flow and `eml evaluate faithfulness`: tables, figures, manifest, catalog, resume, pairs
from a localization run, and bad input (one line, exit 2, before any flow starts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eml_core.errors import ArgumentError
from eml_core.faithfulness import point_methods
from eml_core.methods import DEFAULT_METHODS as METHODS
from eml_core.results import ResultsLocation, resolve_run
from eml_core.tables import SCHEMAS
from flows.cli import main
from tests.hostile.harness import run_cli

TINY = "tests.conftest:tiny"
STEPS = (0.0, 0.5, 1.0)
TABLES = ("faithfulness_curves", "faithfulness_points", "faithfulness_summary", "sanity", "sanity_summary", "errors")
ORDERINGS = len(METHODS) + 2  # every method, the random and the gradient-oracle references


def _config(root, out, **options):
    from tasks.configs import FaithfulnessConfig

    values = {"dataset": f"cub:{root}", "model": TINY, "out": str(out), "pairs": 3, "steps": STEPS, "shard_size": 2,
              "points_per_pair": 1}
    return FaithfulnessConfig(**(values | options))


@pytest.fixture(scope="module")
def first_run(prefect_harness, tiny_synthetic_root, tmp_path_factory):
    from flows.evaluate_faithfulness import evaluate_faithfulness

    out = tmp_path_factory.mktemp("faithfulness")
    return out, evaluate_faithfulness(_config(tiny_synthetic_root, out))


def test_flow_writes_every_table_figure_manifest_and_catalog_row(first_run):
    out, result = first_run
    store = resolve_run(str(out), "faithfulness")
    assert Path(store.uri).name == result["run_id"] and Path(store.uri).parent == out / "faithfulness"
    tables = {name: store.read_table(f"{name}.parquet") for name in TABLES}
    for name, table in tables.items():
        assert list(table.columns) == SCHEMAS[name].names, name
    curves = tables["faithfulness_curves"]
    # 3 pairs x 2 sides x (4 methods + 2 references) x 2 curves x 3 steps
    assert len(curves) == 3 * 2 * ORDERINGS * 2 * len(STEPS) and curves["pair_id"].nunique() == 3
    assert set(curves["removal"]) == {"blur"} and set(curves["fraction"]) == set(STEPS)
    # deletion of nothing and insertion of everything are the intact pair: one similarity per pair
    intact = curves[((curves["curve"] == "deletion") & (curves["fraction"] == 0))
                    | ((curves["curve"] == "insertion") & (curves["fraction"] == 1))]
    assert (intact.groupby("pair_id")["similarity"].nunique() == 1).all()
    summary = tables["faithfulness_summary"]
    assert set(summary["method"]) == {*METHODS, "random", "gradient_oracle"} and (summary["pairs"] == 3).all()
    assert summary[summary["reference"]]["method"].tolist() != [] and summary["deletion_auc"].notna().all()
    # point-specific rows only for methods with point-specific maps, one query pixel per pair
    with_points = point_methods(METHODS)
    assert "decomposition" in with_points and "gradcam" not in with_points
    assert set(tables["faithfulness_points"]["method"]) == set(with_points)
    assert len(tables["faithfulness_points"]) == 3 * len(with_points)
    sanity = tables["sanity"]
    depths = sanity["depth"].nunique()
    assert depths >= 2 and len(sanity) == 3 * 2 * len(METHODS) * depths
    assert len(tables["sanity_summary"]) == len(METHODS) * depths
    assert tables["errors"].empty
    run = Path(store.uri)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["steps"] == list(STEPS) and len(manifest["pairs"]) == 3
    assert manifest["cost"]["pairs_computed"] == 3 and manifest["cost"]["shards_computed"] == 2
    # batched: far fewer forward calls than perturbed images
    assert 0 < manifest["cost"]["forward_calls"] < manifest["cost"]["images_forwarded"]
    assert {v["method"] for v in manifest["sanity_verdicts"]} == set(METHODS)
    for figure in ("faithfulness_curves.png", "sanity.png"):
        assert (run / "figures" / figure).stat().st_size > 1000
    from tasks.runs import read_catalog

    catalog = read_catalog(str(out))
    assert catalog["kind"].tolist() == ["faithfulness"] and catalog["run_id"].tolist() == [result["run_id"]]
    assert "deletion_auc/blur/decomposition" in json.loads(catalog["headline"][0])


def test_a_rerun_resumes_every_shard_and_gives_the_same_tables(first_run, tiny_synthetic_root):
    from flows.evaluate_faithfulness import evaluate_faithfulness

    out, first = first_run
    second = evaluate_faithfulness(_config(tiny_synthetic_root, out))
    assert second["run_id"] != first["run_id"]
    assert second["manifest"]["cost"]["shards_computed"] == 0 and second["manifest"]["cost"]["forward_calls"] == 0
    before = ResultsLocation(first["location"]).read_table("faithfulness_curves.parquet")
    after = ResultsLocation(second["location"]).read_table("faithfulness_curves.parquet")
    assert before.equals(after)
    assert second["summary"].equals(first["summary"])


def test_command_takes_the_pairs_of_a_localization_run_and_reports_unknown_images(
        prefect_harness, tiny_synthetic, tiny_synthetic_root, tmp_path, capsys):
    items = tiny_synthetic.items
    rows = [{"pair_id": "p0", "image_id": items[0].image_id, "partner_id": items[1].image_id},
            {"pair_id": "p1", "image_id": items[4].image_id, "partner_id": items[5].image_id},
            {"pair_id": "ghost", "image_id": "not-in-the-dataset", "partner_id": items[1].image_id}]
    localization = ResultsLocation(str(tmp_path / "loc"))
    full = [{name: None for name in SCHEMAS["localization_items"].names} | row | {"side": "query", "method": m}
            for row in rows for m in METHODS]
    localization.write_table("localization_items.parquet", "localization_items", full)
    localization.write_json("manifest.json", {"kind": "evaluate_localization"})
    code = main(["evaluate", "faithfulness", "--dataset", f"cub:{tiny_synthetic_root}", "--model", TINY,
                 "--out", str(tmp_path / "run"), "--localization-run", str(tmp_path / "loc"),
                 "--methods", "decomposition", "--removal", "mean", "--steps", "0,1", "--sides", "query",
                 "--points-per-pair", "0", "--no-sanity"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "| mean | decomposition |" in printed and "errors: 1" in printed
    store = resolve_run(str(tmp_path / "run"), "faithfulness")
    curves = store.read_table("faithfulness_curves.parquet")
    assert set(curves["pair_id"]) == {"p0", "p1"} and set(curves["side"]) == {"query"}
    assert store.read_table("sanity.parquet").empty and store.read_table("faithfulness_points.parquet").empty
    errors = store.read_table("errors.parquet")
    assert errors["item"].tolist() == ["ghost"] and "not-in-the-dataset" in errors["problem"][0]


@pytest.mark.parametrize("argv, message", [
    (["--removal", "erase"], "--removal: unknown removal 'erase'"),
    (["--steps", "0,0.5"], "--steps: fractions must increase strictly from 0 to 1"),
    (["--steps", "0,half,1"], "--steps: expected comma-separated fractions"),
    (["--sides", "left"], "--sides: unknown side 'left'"),
    (["--methods", "saliency"], "--methods: unknown method 'saliency'"),
    (["--localization-run", "/nonexistent/localization"], "--localization-run:"),
])
def test_bad_options_are_one_line_and_exit_2_before_any_flow(argv, message, tiny_synthetic_root, tmp_path):
    result = run_cli(["evaluate", "faithfulness", "--dataset", f"cub:{tiny_synthetic_root}", "--model", TINY,
                      "--out", str(tmp_path / "run"), *argv], entry_point="eml evaluate faithfulness")
    assert message in result.err
    assert not (tmp_path / "run").exists()


def test_config_checks_the_form_of_each_field():
    from tasks.configs import FaithfulnessConfig, validated

    assert FaithfulnessConfig().removals == ("blur",) and FaithfulnessConfig().steps[0] == 0.0
    for values, field in (({"removals": ()}, "removals"), ({"steps": (0.0, 2.0, 1.0)}, "steps"),
                          ({"split": "val"}, "split"), ({"region_fraction": 1.0}, "region_fraction"),
                          ({"localization_run": "ftp://x"}, "localization_run"), ({"pairs": 0}, "pairs")):
        with pytest.raises(ArgumentError) as error:
            validated(FaithfulnessConfig, **values)
        assert error.value.argument == field
