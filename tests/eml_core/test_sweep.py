"""The one-pass threshold sweep equals the OpenCV loop: hand-made golden cases and property tests.

Every comparison is exact (boxes are equal as tuples, not close). The OpenCV loop
(``algorithm="opencv"``) is the reference; the union-find sweep must reproduce
its boxes at every threshold, tie rule included, at 4- and 8-connectivity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eml_core.errors import ArgumentError
from eml_core.sweep import (
    AUTHORS_SIZE,
    FINE_THRESHOLDS,
    PAPER_THRESHOLDS,
    box_iou,
    box_ious,
    comparison_thresholds,
    largest_component_boxes,
    scale_box,
    sweep_thresholds,
    threshold_size,
)

GT = (0.0, 0.0, 4.0, 4.0)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def both(heat, thresholds, connectivity=4):
    """Boxes of both algorithms; asserts they are identical and returns them."""
    new = [r.box for r in sweep_thresholds(heat, GT, thresholds, connectivity)]
    reference = [r.box for r in sweep_thresholds(heat, GT, thresholds, connectivity, algorithm="opencv")]
    assert new == reference, (connectivity, list(thresholds), new, reference)
    return new


# --- golden cases written by hand --------------------------------------------------------------------------


def test_tie_between_single_pixels_follows_opencv_order_at_each_connectivity():
    heat = np.zeros((4, 6))
    heat[0, 3] = heat[1, 0] = 1.0       # two components of area 1
    # 4-connectivity: first pixel in raster order, (row 0, column 3).
    assert both(heat, [0.5], 4) == [(3.0, 0.0, 4.0, 1.0)]
    # 8-connectivity: first 2x2 block in block order; (1, 0) is in block (0, 0), (0, 3) in block (0, 1).
    assert both(heat, [0.5], 8) == [(0.0, 1.0, 1.0, 2.0)]


def test_8_connectivity_tie_depends_on_where_the_mask_starts():
    """OpenCV labels the mask cropped to its bounding box: the 2x2 blocks start at the mask's top row."""
    heat = np.zeros((4, 12))
    heat[1, 3:5] = 0.8      # pair A, rows 1
    heat[2, 0:2] = 0.8      # pair B, row 2: same area as A
    heat[0, 10] = 0.6       # a lone pixel that moves the mask's top row from 1 to 0 when t < 0.6
    above_pair, with_lone_pixel = both(heat, [0.7, 0.5], 8)
    assert above_pair == (0.0, 2.0, 2.0, 3.0)        # top = 1: A and B in the same block row, B's block first
    assert with_lone_pixel == (3.0, 1.0, 5.0, 2.0)   # top = 0: A in block row 0, B in block row 1
    assert both(heat, [0.7, 0.5], 4) == [(3.0, 1.0, 5.0, 2.0)] * 2   # raster order: A both times


def test_largest_component_wins_over_the_hottest():
    heat = np.zeros((20, 30))
    heat[2:4, 2:4] = 1.0
    heat[8:18, 10:28] = 0.6
    for connectivity in (4, 8):
        assert both(heat, [0.7, 0.5, 0.0], connectivity) == [(2.0, 2.0, 4.0, 4.0), (10.0, 8.0, 28.0, 18.0),
                                                             (10.0, 8.0, 28.0, 18.0)]


def test_threshold_is_strict_and_plateaus_enter_whole():
    heat = np.zeros((6, 6))
    heat[1:5, 1:3] = 0.5    # a plateau of 8 pixels
    heat[1:3, 4] = 0.75     # a smaller, hotter plateau
    assert both(heat, [0.75, 0.5, 0.4999, 0.0]) == [None, (4.0, 1.0, 5.0, 3.0), (1.0, 1.0, 3.0, 5.0),
                                                    (1.0, 1.0, 3.0, 5.0)]


def test_components_merge_as_the_threshold_falls():
    heat = np.array([[0.9, 0.2, 0.8, 0.8],
                     [0.1, 0.0, 0.0, 0.7],
                     [0.6, 0.6, 0.6, 0.0]])
    # 0.85: one pixel; 0.75: the pair at the top right (area 2); 0.65: it grows down to (1, 3) (area 3);
    # 0.5: the bottom row (area 3) ties with it, and the top-right group starts first in raster order;
    # 0.15: the top row joins everything above 0.15 (area 5); 0.05: (1, 0) joins the bottom row too (area 9).
    assert both(heat, [0.85, 0.75, 0.65, 0.5, 0.15, 0.05], 4) == [
        (0.0, 0.0, 1.0, 1.0), (2.0, 0.0, 4.0, 1.0), (2.0, 0.0, 4.0, 2.0), (2.0, 0.0, 4.0, 2.0),
        (0.0, 0.0, 4.0, 2.0), (0.0, 0.0, 4.0, 3.0)]


def test_empty_single_pixel_and_all_equal_maps():
    for connectivity in (4, 8):
        assert both(np.zeros((5, 7)), [0.0, 0.5], connectivity) == [None, None]
        single = np.zeros((5, 7))
        single[4, 6] = 1.0
        assert both(single, [0.0, 0.99, 1.0], connectivity) == [(6.0, 4.0, 7.0, 5.0)] * 2 + [None]
        flat = np.full((5, 7), 0.5)
        assert both(flat, [0.4, 0.5], connectivity) == [(0.0, 0.0, 7.0, 5.0), None]
        assert both(np.ones((1, 1)), [0.0], connectivity) == [(0.0, 0.0, 1.0, 1.0)]
        assert both(np.zeros((0, 3)), [0.0], connectivity) == [None]


def test_results_keep_the_order_and_repeats_of_the_thresholds():
    heat = np.zeros((4, 4))
    heat[1, 1] = 0.9
    heat[2:4, 2:4] = 0.4
    thresholds = [0.5, 0.1, 0.5, 0.95, 0.1]
    results = sweep_thresholds(heat, (1.0, 1.0, 2.0, 2.0), thresholds)
    assert [r.threshold for r in results] == thresholds
    assert [r.box for r in results] == [(1.0, 1.0, 2.0, 2.0), (2.0, 2.0, 4.0, 4.0), (1.0, 1.0, 2.0, 2.0), None,
                                        (2.0, 2.0, 4.0, 4.0)]
    assert [r.iou for r in results] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert sweep_thresholds(heat, GT, []) == []


def test_float32_maps_compare_as_numpy_does():
    """``float32_map > 0.15`` casts 0.15 to float32 first; a float64 scalar compares exactly."""
    heat = np.zeros((3, 3), dtype=np.float32)
    heat[1, 1] = np.float32(0.15)         # 0.150000006 in float32
    assert both(heat, [0.15]) == [None]                                   # equal after the cast
    assert both(heat, [np.float64(0.15)]) == [(1.0, 1.0, 2.0, 2.0)]       # 0.150000006 > 0.15
    assert comparison_thresholds(np.float32, [0.15, np.float64(0.15)]).tolist() == [float(np.float32(0.15)), 0.15]
    assert both(heat, [float("nan"), -np.inf, np.inf]) == [None, (0.0, 0.0, 3.0, 3.0), None]


def test_thresholds_closer_than_the_lookup_table_can_scale():
    """Thresholds 1e-308 apart: 4096 bins over their span would need a scale beyond the largest float (found by
    hypothesis: the level lookup read outside its table); levels then come from exact comparisons alone."""
    heat = np.full((4, 5), 1.1125369292536007e-308)
    heat[0, 0], heat[2, 3] = 0.0, 0.77
    assert both(heat, [0.0, 1.1125369292536007e-308], 4) == [(0.0, 0.0, 5.0, 4.0), (3.0, 2.0, 4.0, 3.0)]
    assert both(heat, [0.0, 1.1125369292536007e-308], 8) == [(0.0, 0.0, 5.0, 4.0), (3.0, 2.0, 4.0, 3.0)]


def test_bad_arguments_are_refused_with_their_name():
    with pytest.raises(ArgumentError, match="algorithm"):
        sweep_thresholds(np.zeros((3, 3)), GT, [0.5], algorithm="fast")
    with pytest.raises(ArgumentError, match="connectivity"):
        sweep_thresholds(np.zeros((3, 3)), GT, [0.5], connectivity=6)
    with pytest.raises(ArgumentError, match="normalised_map"):
        sweep_thresholds(np.zeros((2, 3, 3)), GT, [0.5])
    with pytest.raises(ArgumentError, match="resolution"):
        threshold_size((10, 10), "native")


# --- property tests: the one-pass sweep equals the OpenCV loop --------------------------------------------

shapes = st.tuples(st.integers(1, 18), st.integers(1, 18))
connectivities = st.sampled_from([4, 8])


@st.composite
def maps_and_thresholds(draw, elements):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    heat = draw(arrays(dtype, draw(shapes), elements=elements(dtype)))
    # Thresholds: grid points, 0, values taken from the map itself (ties with t), repeats, any order.
    from_map = draw(st.lists(st.sampled_from(heat.ravel().tolist()), max_size=4))
    free = draw(st.lists(st.floats(0, 1, width=32), max_size=4))
    thresholds = draw(st.permutations([0.0, *from_map, *free, *draw(st.lists(st.sampled_from(PAPER_THRESHOLDS),
                                                                                   max_size=3))]))
    if draw(st.booleans()):       # NumPy float64 scalars compare without the cast to the map's dtype
        thresholds = [np.float64(t) for t in thresholds]
    return heat, thresholds


def continuous(dtype):
    return st.floats(0, 1, width=32 if dtype == np.float32 else 64)


def quantised(dtype):
    return st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])   # plateaus and many equal-area components


def sparse(dtype):
    return st.sampled_from([0.0, 0.0, 0.0, 1.0])          # mostly isolated pixels: ties everywhere


@PROPERTY
@given(case=maps_and_thresholds(continuous), connectivity=connectivities)
def test_equals_opencv_on_random_maps(case, connectivity):
    both(*case, connectivity)


@PROPERTY
@given(case=maps_and_thresholds(quantised), connectivity=connectivities)
def test_equals_opencv_on_maps_with_plateaus_and_ties(case, connectivity):
    both(*case, connectivity)


@PROPERTY
@given(case=maps_and_thresholds(sparse), connectivity=connectivities)
def test_equals_opencv_on_sparse_masks(case, connectivity):
    both(*case, connectivity)


@PROPERTY
@given(steps=arrays(np.int64, shapes, elements=st.integers(0, 30)), connectivity=connectivities,
       spread=st.sampled_from([1e-12, 1e-6, 1.0 / 30]), extra=st.sampled_from([(), (-np.inf,), (np.inf, -np.inf)]))
def test_equals_opencv_with_crowded_or_unbounded_grids(steps, connectivity, spread, extra):
    """Thresholds packed closer than the level lookup's bins (or infinite) take the exact slow path."""
    heat = 0.5 + spread * steps
    thresholds = [0.0, 1.0, *np.unique(heat).tolist(), *(0.5 + spread * (np.arange(31) + 0.5)).tolist(), *extra]
    both(heat, thresholds, connectivity)


@PROPERTY
@given(shape=shapes, row=st.integers(0, 17), column=st.integers(0, 17), value=st.floats(0, 1),
       connectivity=connectivities)
def test_equals_opencv_on_single_pixel_masks(shape, row, column, value, connectivity):
    heat = np.zeros(shape)
    heat[row % shape[0], column % shape[1]] = value
    boxes = both(heat, [0.0, value, value / 2, 1.0], connectivity)
    expected = (float(column % shape[1]), float(row % shape[0]), float(column % shape[1] + 1),
                float(row % shape[0] + 1))
    assert boxes == [expected if value > 0 else None, None, expected if value > 0 else None, None]


@PROPERTY
@given(shape=shapes, value=st.floats(0, 1), connectivity=connectivities)
def test_equals_opencv_on_all_equal_maps(shape, value, connectivity):
    whole = (0.0, 0.0, float(shape[1]), float(shape[0]))
    assert both(np.full(shape, value), [0.0, value, 1.0], connectivity) == [whole if value > 0 else None, None, None]


@pytest.mark.parametrize("connectivity", [4, 8])
def test_equals_opencv_on_cub_sized_smooth_maps(connectivity):
    """Upsampled 7x7 maps at a CUB image size, on the fine grid (OpenCV's multi-threaded labelling included)."""
    from eml_core.presentation import normalised_at_image_size

    generator = torch.Generator().manual_seed(connectivity)
    for _ in range(2):
        raw = torch.randn(7, 7, generator=generator) + 0.3
        heat, _ = normalised_at_image_size(raw, (333, 500))
        both(heat, FINE_THRESHOLDS, connectivity)
        stepped = np.round(heat * 8) / 8       # wide plateaus, exactly on grid values
        both(stepped.astype(np.float32), FINE_THRESHOLDS, connectivity)


def test_largest_component_boxes_agrees_with_the_sweep():
    heat = np.random.default_rng(0).random((9, 11))
    reference = [r.box for r in sweep_thresholds(heat, GT, connectivity=8)]
    assert largest_component_boxes(heat, PAPER_THRESHOLDS, 8) == reference


# --- the authors' resolution ---------------------------------------------------------------------------------


def test_threshold_size_and_box_scaling():
    assert threshold_size((375, 500)) == (375, 500)
    assert threshold_size((375, 500), "authors_224") == AUTHORS_SIZE == (224, 224)
    assert scale_box((56.0, 112.0, 224.0, 168.0), (224, 224), (375, 500)) == (125.0, 187.5, 500.0, 281.25)
    assert scale_box(None, (224, 224), (10, 10)) is None


def test_authors_resolution_scales_boxes_back_and_keeps_the_iou():
    """A box found at 224 x 224 is scaled to the image; its IoU is the IoU at 224 against the scaled truth."""
    from eml_core.presentation import normalised_at_image_size

    raw = torch.zeros(7, 7)
    raw[2:5, 1:4] = 1.0
    image_size, truth = (300, 450), (60.0, 90.0, 200.0, 210.0)
    heat, _ = normalised_at_image_size(raw, threshold_size(image_size, "authors_224"))
    at_224 = sweep_thresholds(heat, GT, [0.5])[0].box
    (result,) = sweep_thresholds(heat, truth, [0.5], image_size=image_size)
    assert result.box == scale_box(at_224, (224, 224), image_size)
    truth_at_224 = scale_box(truth, image_size, (224, 224))
    assert result.iou == pytest.approx(box_iou(at_224, truth_at_224), abs=1e-12)
    assert [r.box for r in sweep_thresholds(heat, truth, [0.5], image_size=(224, 224))] == [at_224]


def test_localization_rows_at_the_authors_resolution():
    from eml_core.datasets import Item
    from eml_core.localization import _sweep_rows
    from eml_core.presentation import normalised_at_image_size
    from eml_core.retrieval import Pair

    query = Item("q", "q.jpg", "q.jpg", 1, "test", (40.0, 30.0, 120.0, 90.0), (120, 160))
    other = Item("r", "r.jpg", "r.jpg", 1, "test", (0.0, 0.0, 10.0, 10.0), (50, 50))
    raw = torch.zeros(1, 4, 4)
    raw[0, 1:3, 1:3] = 1.0
    maps = {"decomposition": {"query": raw, "retrieved": raw}}
    args = ([Pair("p", query, other, 1.0)], maps, ("decomposition",), (0.5, 0.9), 4, ("query",))
    at_image = _sweep_rows(*args)
    at_224 = _sweep_rows(*args, resolution="authors_224")
    expected = sweep_thresholds(normalised_at_image_size(raw[0], (224, 224))[0], query.box, (0.5, 0.9),
                                image_size=query.size)
    assert [(r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"]) for r in at_224] == [e.box for e in expected]
    assert [r["iou"] for r in at_224] == [e.iou for e in expected]
    assert all(r["box_x1"] <= 160 and r["box_y1"] <= 120 for r in at_224 + at_image)
    assert [r["box_x0"] for r in at_224] != [r["box_x0"] for r in at_image]   # another grid, other edges


@PROPERTY
@given(boxes=st.lists(st.one_of(st.none(), st.tuples(*[st.integers(0, 40)] * 4).map(
           lambda b: (float(min(b[0], b[2])), float(min(b[1], b[3])), float(max(b[0], b[2])), float(max(b[1], b[3]))))),
           max_size=12),
       truth=st.tuples(*[st.floats(0, 40, width=32)] * 4).map(lambda b: (min(b[0], b[2]), min(b[1], b[3]),
                                                                        max(b[0], b[2]), max(b[1], b[3]))))
def test_vectorised_ious_equal_box_iou(boxes, truth):
    assert box_ious(boxes, truth) == [box_iou(box, truth) for box in boxes]
    assert box_ious(boxes, None) == [0.0] * len(boxes)


def test_the_benchmark_command_in_the_docs_runs_as_written():
    """docs/sweep.md shows one command; it runs, and the benchmark finds both algorithms in agreement."""
    import shlex
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    commands = [line for line in (root / "docs" / "sweep.md").read_text().splitlines()
                if line.startswith(".venv/bin/python benchmarks/bench_sweep.py")]
    assert commands
    for command in commands:
        done = subprocess.run(shlex.split(command), cwd=root, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("identical results on every map and grid") == 4   # 2 families x 2 connectivities
