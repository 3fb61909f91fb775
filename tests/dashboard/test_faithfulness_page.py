"""The dashboard's faithfulness page over a real faithfulness run (the flow on the tiny model)."""

from __future__ import annotations

import pytest

from tests.dashboard.test_pages import _app, _clean, _table

TINY = "tests.conftest:tiny"


@pytest.fixture(scope="module")
def faithfulness_root(prefect_harness, tiny_synthetic_root, tmp_path_factory):
    from flows.evaluate_faithfulness import evaluate_faithfulness
    from tasks.configs import FaithfulnessConfig

    out = tmp_path_factory.mktemp("faithfulness-dashboard")
    evaluate_faithfulness(FaithfulnessConfig(dataset=f"cub:{tiny_synthetic_root}", model=TINY, out=str(out), pairs=2,
                                             steps=(0.0, 0.5, 1.0), shard_size=2, points_per_pair=1,
                                             removals=("blur", "mean")))
    return str(out)


def test_faithfulness_page_shows_aucs_curves_sanity_and_figures(faithfulness_root, monkeypatch):
    at = _app(monkeypatch, faithfulness_root).run().switch_page("views/faithfulness.py").run()
    _clean(at)
    summary = _table(at, "deletion_auc", "insertion_auc")
    assert {"random", "gradient_oracle", "decomposition"} <= set(summary["method"])
    assert set(summary["removal"]) == {"blur", "mean"}
    verdicts = _table(at, "passes", "spearman")
    assert "decomposition" in set(verdicts["method"])
    assert any("most faithful" in caption.value for caption in at.caption)
    assert len(at.get("arrow_vega_lite_chart")) + len(at.get("vega_lite_chart")) == 2  # the curves, the sanity
    assert len(at.image) == 2  # the run's curves and sanity figures
    at.selectbox(key="removal").set_value("mean").run()
    at.radio(key="curve").set_value("insertion").run()
    _clean(at)
