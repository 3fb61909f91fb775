"""`eml study ...` and `eml rankings` on the command line."""

from __future__ import annotations

import pandas as pd

from amt.ledger import Ledger
from flows.cli import main
from tests.amt.conftest import write_definition
from tests.amt.test_analysis import simulate


def test_study_build_and_analyze_commands(localization_run, tmp_path, capsys):
    definition = write_definition(tmp_path, study_id="cli-study", kind="overall_map",
                                  methods=["decomposition", "gradcam"], source=str(localization_run), items=4,
                                  items_per_hit=2, catch_trial_rate=0.0)
    assert main(["study", "build", str(definition), "--out", str(tmp_path / "study")]) == 0
    assert "no AWS call made" in capsys.readouterr().out
    assert main(["study", "analyze", str(tmp_path / "study")]) == 2
    assert "no responses yet" in capsys.readouterr().err
    simulated = simulate(ledger=Ledger.load(tmp_path / "study"))
    stray = simulated.iloc[:3].assign(item_id="i-000000000000")  # answers to an item this study does not have
    pd.concat([simulated, stray]).to_parquet(tmp_path / "study" / "responses.parquet")
    assert main(["study", "analyze", str(tmp_path / "study")]) == 0
    captured = capsys.readouterr()
    assert "decomposition vs gradcam" in captured.out and "sign test" in captured.out
    assert "1 problems recorded" in captured.err
    errors = pd.read_parquet(tmp_path / "study" / "errors.parquet")
    assert list(errors["item"]) == ["i-000000000000"] and "3 answer(s)" in errors["problem"].iloc[0]
    # a study folder holding responses is never rebuilt (the answers would point at other items)
    assert main(["study", "build", str(definition), "--out", str(tmp_path / "study")]) == 2
    assert "holds responses" in capsys.readouterr().err


def test_study_errors_exit_2(tmp_path, capsys):
    bad = write_definition(tmp_path, study_id="x", kind="overall_map")
    assert main(["study", "build", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "study.yaml: field 'methods': is required" in capsys.readouterr().err
    assert main(["study", "collect", str(tmp_path / "nowhere")]) == 2
    assert "no study ledger here" in capsys.readouterr().err


def test_rankings_command(tiny_synthetic_root, tmp_path, capsys):
    out = tmp_path / "rankings.parquet"
    assert main(["rankings", "--dataset", f"cub:{tiny_synthetic_root}", "--model", "tests.conftest:tiny",
                 "--out", str(out), "--queries", "3", "--top-k", "2"]) == 0
    table = pd.read_parquet(out)
    assert set(table["method"]) == {"partial_similarity", "overall_similarity"}
    assert table.groupby(["query_id", "method"]).size().eq(2).all() and table["query_id"].nunique() == 3
    assert (table["query_id"] != table["gallery_id"]).all()
