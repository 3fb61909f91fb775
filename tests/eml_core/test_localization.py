"""Threshold sweep: known components give known boxes and IoUs; accuracy tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from eml_core.presentation import normalised_at_image_size
from eml_core.sweep import (
    accuracy_table,
    best_per_method,
    box_iou,
    largest_component_box,
    max_box_accuracy,
    sweep_thresholds,
)


def test_iou_edge_cases():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0       # touching edges share no area
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)  # containment
    assert box_iou(None, (0, 0, 1, 1)) == 0.0
    assert box_iou((3, 3, 3, 3), (3, 3, 3, 3)) == 0.0             # empty boxes: no division by zero


def test_largest_component_box_uses_pixel_edges():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:6] = True  # rows 2..4, columns 3..5
    assert largest_component_box(mask) == (3.0, 2.0, 6.0, 5.0)
    assert largest_component_box(np.zeros((4, 4), dtype=bool)) is None


def test_connectivity_changes_what_counts_as_one_component():
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True   # a diagonal: 3 components at 4-connectivity, 1 at 8
    mask[4:6, 4:6] = True                          # a 2x2 block (4 pixels)
    assert largest_component_box(mask, connectivity=4) == (4.0, 4.0, 6.0, 6.0)
    mask[3, 3] = True                              # diagonal now has 4 pixels + joins the block at 8-connectivity
    assert largest_component_box(mask, connectivity=8) == (0.0, 0.0, 6.0, 6.0)


def test_sweep_keeps_the_largest_component_not_the_top_blob():
    heat = np.zeros((20, 30))
    heat[2:4, 2:4] = 1.0        # the hottest blob: tiny
    heat[8:18, 10:28] = 0.6     # a larger, cooler blob
    gt = (10.0, 8.0, 28.0, 18.0)
    results = {r.threshold: r for r in sweep_thresholds(heat, gt, [0.5, 0.7])}
    assert results[0.5].box == gt and results[0.5].iou == 1.0 and results[0.5].correct
    assert results[0.7].box == (2.0, 2.0, 4.0, 4.0) and not results[0.7].correct


def test_threshold_is_strict_and_correct_means_iou_above_half():
    heat = np.zeros((10, 10))
    heat[0:10, 0:5] = 0.5
    (at_half,) = sweep_thresholds(heat, (0, 0, 10, 10), [0.5])
    assert at_half.box is None and at_half.iou == 0.0          # map > t, not >=
    (below,) = sweep_thresholds(heat, (0, 0, 10, 10), [0.4])
    assert below.iou == pytest.approx(0.5) and not below.correct   # exactly 0.5 is not > 0.5


def test_sweep_box_is_in_original_image_coordinates():
    raw = torch.zeros(4, 4)
    raw[1:3, 1:3] = 1.0
    normalised, flagged = normalised_at_image_size(raw, (40, 80))
    assert not flagged and normalised.shape == (40, 80)
    (result,) = sweep_thresholds(normalised, (20.0, 10.0, 60.0, 30.0), [0.9])
    x0, y0, x1, y1 = result.box
    assert 20 <= x0 < 40 < x1 <= 60 and 10 <= y0 < 20 < y1 <= 30  # centred, inside the true box


def test_flagged_map_gives_no_box():
    normalised, flagged = normalised_at_image_size(-torch.ones(3, 3), (9, 9))
    assert flagged
    assert sweep_thresholds(normalised, (0, 0, 9, 9), [0.1])[0].box is None


def test_accuracy_best_and_maxboxacc_tables():
    rows = pd.DataFrame({
        "method": ["a"] * 4 + ["b"] * 4,
        "threshold": [0.2, 0.2, 0.5, 0.5] * 2,
        "correct": [True, False, True, True, False, False, True, False],
        "iou": [0.6, 0.2, 0.8, 0.55, 0.1, 0.3, 0.75, 0.4],
    })
    summary = accuracy_table(rows, thresholds=(0.2, 0.5))
    assert summary.set_index(["method", "threshold"])["accuracy"].to_dict() == {
        ("a", 0.2): 0.5, ("a", 0.5): 1.0, ("b", 0.2): 0.0, ("b", 0.5): 0.5}
    best = best_per_method(summary).set_index("method")
    assert best.loc["a", "best_accuracy"] == 1.0 and best.loc["a", "best_threshold"] == 0.5
    boxacc = max_box_accuracy(rows, iou_thresholds=(0.3, 0.7)).set_index(["method", "iou_threshold"])
    assert boxacc.loc[("b", 0.3), "maxboxacc"] == 1.0 and boxacc.loc[("b", 0.7), "maxboxacc"] == 0.5
    assert boxacc.loc[("a", 0.7), "maxboxacc"] == 0.5 and boxacc.loc[("a", 0.3), "best_map_threshold"] == 0.5


def test_localize_pairs_with_a_native_size_model_batches_equal_shapes_only(tiny_synthetic):
    from eml_core.localization import localize_pairs
    from eml_core.retrieval import same_class_pairs
    from tests.conftest import tiny_model

    model = tiny_model("gap_fc")
    model.preprocessing.input_size = None  # every image at its own size (the synthetic ones differ)
    pairs, _ = same_class_pairs(tiny_synthetic.items, None, mode="random")
    rows, errors = localize_pairs(model, pairs, methods=("decomposition",), thresholds=(0.5,), batch_size=8)
    assert not errors
    assert len(rows) == len(pairs)


def test_tables_one_and_two_exclude_training_images_by_default():
    rows = pd.DataFrame({"method": ["a"] * 4, "threshold": [0.5] * 4, "split": ["train", "train", "test", "test"],
                         "correct": [True, True, False, True], "iou": [0.9, 0.9, 0.1, 0.6]})
    summary = accuracy_table(rows, thresholds=(0.5,))
    assert summary["accuracy"].tolist() == [0.5] and summary["count"].tolist() == [2]  # the test rows only
    assert accuracy_table(rows, thresholds=(0.5,), splits=None)["count"].tolist() == [4]
    assert accuracy_table(rows, thresholds=(0.5,), splits=("train",))["accuracy"].tolist() == [1.0]
    assert max_box_accuracy(rows, iou_thresholds=(0.5,))["count"].tolist() == [2]


def test_both_sides_of_a_pair_are_scored_when_asked(tiny_synthetic):
    from eml_core.localization import localize_pairs
    from eml_core.retrieval import same_class_pairs
    from tests.conftest import tiny_model

    pairs, _ = same_class_pairs(tiny_synthetic.split("test")[:4], None, mode="random", seed=0)
    model = tiny_model("gap_fc")
    both, _ = localize_pairs(model, pairs, methods=("decomposition",), thresholds=(0.5,),
                             sides=("query", "retrieved"))
    query, _ = localize_pairs(model, pairs, methods=("decomposition",), thresholds=(0.5,), sides=("query",))
    assert len(both) == 2 * len(pairs) and len(query) == len(pairs)
    assert {(r["pair_id"], r["side"], r["image_id"]) for r in both} == (
        {(p.pair_id, "query", p.query.image_id) for p in pairs}
        | {(p.pair_id, "retrieved", p.retrieved.image_id) for p in pairs})
    assert [r for r in both if r["side"] == "query"] == query  # the query side is the same either way
