"""Every page of the review dashboard, driven by Streamlit's AppTest over a demo results root (two localization
runs, an orientation run, a retrieval run, an analysed study with held assignments)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from amt.ledger import Ledger
from eml_core.results import ResultsLocation

APP = Path(__file__).resolve().parents[2] / "flows" / "dashboard" / "app.py"


def _app(monkeypatch, root: str, studies: tuple[str, ...] = (), live: bool = False):
    from streamlit.testing.v1 import AppTest

    from flows.dashboard import data
    from flows.dashboard.settings import environment

    for key, value in environment(root, studies, live).items():
        monkeypatch.setenv(key, value)
    for cached in (data.catalog, data.study):  # each test sees the folders as they are now
        cached.clear()
    return AppTest.from_file(str(APP), default_timeout=120)


def _table(at, *columns) -> pd.DataFrame:
    """The page's table holding these columns (st.dataframe carries no key without a selection)."""
    for frame in at.dataframe:
        if all(column in frame.value.columns for column in columns):
            return frame.value
    raise AssertionError(f"no table with columns {columns} on the page")


def _clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_runs_page_lists_filters_and_compares_runs(demo, monkeypatch):
    at = _app(monkeypatch, demo["root"]).run()
    _clean(at)
    assert at.title[0].value == "Runs"
    listing = _table(at, "run", "kind", "headline")
    assert set(listing["kind"]) == {"localization", "orientation", "retrieval", "study"} and len(listing) == 5
    at.multiselect(key="kinds").set_value(["localization"]).run()
    assert set(_table(at, "run", "kind", "headline")["kind"]) == {"localization"}
    first, second = (row["run_id"] for row in demo["localization"])
    at.selectbox(key="first").set_value(first).run()
    at.selectbox(key="second").set_value(second).run()
    _clean(at)
    comparison = _table(at, "metric", "delta").set_index("metric")
    a, b = (json.loads(row["headline"]) for row in demo["localization"])
    metric = "best_accuracy/decomposition"
    assert comparison.loc[metric, "first"] == pytest.approx(a[metric])
    assert comparison.loc[metric, "delta"] == pytest.approx(b[metric] - a[metric])
    changed = _table(at, "parameter")
    assert "checkpoint_sha256" in set(changed["parameter"]) and "seed" in set(changed["parameter"])
    side = _table(at, "delta (points)")
    assert side["delta (points)"].loc["decomposition"] == pytest.approx((b[metric] - a[metric]) * 100)
    at.selectbox(key="trend_metric").set_value(metric).run()
    _clean(at)
    assert len(at.get("vega_lite_chart")) == 1


def test_localization_page_tables_curves_trend_classes_and_gallery_filters(demo, monkeypatch):
    at = _app(monkeypatch, demo["root"])
    at.query_params["run"] = demo["localization"][0]["run_id"]
    at.run().switch_page("views/localization.py").run()
    _clean(at)
    run = ResultsLocation(demo["localization"][0]["location"])
    best = run.read_table("localization_best.parquet")
    shown = _table(at, "best_threshold", "method")
    assert list(shown["best_accuracy"]) == list((best["best_accuracy"] * 100).round(1))
    assert _table(at, 0.15).shape == (4, 7)  # methods x the paper's thresholds
    for section in ("Curves", "Trend", "Per class"):
        at.radio(key="section").set_value(section).run()
        _clean(at)
    per_class = _table(at, "images")
    items = run.read_table("localization_items.parquet")
    at_best = items.merge(best, left_on=["method", "threshold"], right_on=["method", "best_threshold"])
    expected = at_best.groupby(["label", "method"])["correct"].mean().unstack() * 100
    pd.testing.assert_frame_equal(per_class.drop(columns="images"), expected.round(1), check_names=False,
                                  check_dtype=False)

    at.radio(key="section").set_value("Gallery").run()
    _clean(at)
    assert "**24 of 24 images** match" in at.markdown[0].value and len(at.image) == 12  # one page
    at.selectbox(key="class").set_value(str(at_best["label"].iloc[0])).run()
    in_class = at_best[at_best["label"] == at_best["label"].iloc[0]]["pair_id"].nunique()
    assert f"**{in_class} of 24 images** match" in at.markdown[0].value and len(at.image) == in_class
    at.selectbox(key="class").set_value("all").run()
    at.selectbox(key="right").set_value("decomposition").run()
    at.selectbox(key="wrong").set_value("gradcam").run()
    _clean(at)
    wide = at_best.pivot(index="pair_id", columns="method", values="correct")
    expected_pairs = set(wide.index[wide["decomposition"] & ~wide["gradcam"]])
    table = _table(at, "pair_id", "side")
    assert set(table["pair_id"]) == expected_pairs
    assert table["correct/decomposition"].all() and not table["correct/gradcam"].any()
    at.selectbox(key="right").set_value("-").run()
    at.selectbox(key="iou_method").set_value("decomposition").run()
    at.slider(key="iou_range").set_value((0.5, 1.0)).run()
    table = _table(at, "pair_id", "side")
    assert len(table) and (table["iou/decomposition"] >= 0.5).all()
    assert len(table) == (at_best[at_best["method"] == "decomposition"]["iou"] >= 0.5).sum()


def test_orientation_and_retrieval_pages_show_their_tables_and_figures(demo, monkeypatch):
    at = _app(monkeypatch, demo["root"]).run().switch_page("views/orientation.py").run()
    _clean(at)
    summary = _table(at, "within_3_5")
    assert set(summary["method"]) == {"overall", "point_specific"}
    assert len(at.image) == 2  # the run's histogram and montage figures
    at.selectbox(key="items_method").set_value("point_specific").run()
    at.slider(key="abs_error").set_value((0.0, 3.5)).run()
    assert (_table(at, "abs_error", "panorama")["abs_error"] <= 3.5).all()

    at.switch_page("views/retrieval.py").run()
    _clean(at)
    evaluation = _table(at, "benchmark")
    assert set(evaluation["metric"]) == {"precision"} and len(at.get("vega_lite_chart")) == 1
    assert len(at.image) == 3  # the query and one strip of ranked images per method, read from the dataset
    assert len(_table(at, "gallery_id")) == 8


def test_studies_page_progress_spend_chart_items_and_workers(demo, monkeypatch):
    at = _app(monkeypatch, demo["root"]).run().switch_page("views/studies.py").run()
    _clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["held for review"] == "2" and metrics["HITs launched"] == "2 / 2"
    assert metrics["assignments submitted"] == "120 / 120" and metrics["approved"] == "118"
    assert len(at.get("vega_lite_chart")) == 2  # Fig. 6 shares, and the intervals
    ledger = Ledger.load(demo["study_folder"])
    assert len(_table(at, "source_ref")) == len(ledger.items)
    assert len(_table(at, "straightlining")) == 60


def test_review_page_approves_and_rejects_through_the_gateway(demo, study_copy_of_demo, monkeypatch):
    import tasks.studies
    from tests.amt.helpers import FakeMTurk

    mturk = FakeMTurk()
    monkeypatch.setattr(tasks.studies, "mturk_client", lambda live=False: mturk)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    held = sorted(Ledger.load(study_copy_of_demo).data["review"])
    at = _app(monkeypatch, demo["root"], (str(study_copy_of_demo),)).run().switch_page("views/review.py").run()
    _clean(at)
    assert "2 assignments held for review." in [m.value for m in at.markdown]
    assert len(at.image) == 2 * 2 * 5  # two assignments, five answers each, both robots' stimuli
    at.button(key=f"approve-{held[0]}").click().run()
    assert mturk.approved == [held[0]] and [s.value for s in at.success] == [f"approved {held[0]}"]
    at.button(key=f"reject-{held[1]}").click().run()  # no reason: refused before any AWS call
    assert mturk.rejected == [] and "a reason for the worker is required" in at.error[0].value
    at.text_input(key=f"reason-{held[1]}").input("Two catch trials failed.").run()
    at.button(key=f"reject-{held[1]}").click().run()
    assert mturk.rejected == [held[1]]
    ledger = Ledger.load(study_copy_of_demo)
    assert ledger.data["review"] == {} and ledger.data["rejected"] == {held[1]: "Two catch trials failed."}
    assert [s.value for s in at.success] == [f"rejected {held[1]}", "Nothing is held for review."]


def test_live_actions_on_a_sandbox_study_are_refused(demo, study_copy_of_demo, monkeypatch):
    import tasks.studies

    monkeypatch.setattr(tasks.studies, "mturk_client", lambda live=False: pytest.fail("reached MTurk"))
    held = sorted(Ledger.load(study_copy_of_demo).data["review"])
    at = _app(monkeypatch, demo["root"], (str(study_copy_of_demo),), live=True).run()
    at.switch_page("views/review.py").run()
    at.button(key=f"approve-{held[0]}").click().run()
    assert "launched in the sandbox" in at.error[0].value
    assert sorted(Ledger.load(study_copy_of_demo).data["review"]) == held


def test_problems_are_one_line_on_the_page(demo, monkeypatch, tmp_path):
    at = _app(monkeypatch, "").run()
    assert "eml dashboard --results LOCATION" in at.error[0].value
    empty = tmp_path / "empty"
    empty.mkdir()
    at = _app(monkeypatch, str(empty)).run()
    assert "No finished run here yet" in at.info[0].value
    at.switch_page("views/localization.py").run()
    assert "No finished localization run" in at.info[0].value
    # a damaged table in a run: the page names the file in one line
    import shutil

    root = tmp_path / "root"
    shutil.copytree(demo["root"], root)
    run_id = demo["localization"][1]["run_id"]
    (root / "localization" / run_id / "localization_summary.parquet").write_bytes(b"PAR1 not a table")
    catalog = root / "catalog" / f"localization-{run_id}.parquet"
    table = pd.read_parquet(catalog)
    table["location"] = str(root / "localization" / run_id)
    table.to_parquet(catalog)
    at = _app(monkeypatch, str(root))
    at.query_params["run"] = run_id
    at.run().switch_page("views/localization.py").run()
    assert not at.exception and "localization_summary.parquet" in at.error[0].value
    assert "\n" not in at.error[0].value
