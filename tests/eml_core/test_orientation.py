"""Cross-view orientation: angle conventions, rotation, the estimators on perfect maps and against a brute-force
reference on real explanations, the error histogram, and the shard entry point."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eml_core.errors import ArgumentError
from eml_core.orientation import (
    aerial_azimuth,
    aerial_cell_azimuths,
    aerial_point,
    cell_centre_pixels,
    disc_mask,
    estimate_from_maps,
    estimate_orientations,
    estimate_point_specific,
    estimate_top_k,
    histogram_bin,
    histogram_bins,
    orientation_error,
    orientation_histogram,
    orientation_methods,
    orientation_summary,
    panorama_azimuth,
    panorama_cell_azimuths,
    panorama_column,
    random_rotations,
    rotate_aerial,
    rotations_for,
    wrap_degrees,
)
from eml_core.orientation_evaluation import estimate_orientation
from eml_core.tables import frame

ANGLE = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)


# --- conventions ---------------------------------------------------------------------------------


def test_panorama_columns_turn_from_south_through_west():
    assert panorama_azimuth(0, 4) == 45.0 and panorama_azimuth(3, 4) == 315.0
    assert panorama_azimuth(np.arange(8), 8).tolist() == [22.5, 67.5, 112.5, 157.5, 202.5, 247.5, 292.5, 337.5]
    assert panorama_column(0.0, 1232) == -0.5            # the left edge faces south
    assert panorama_column(180.0, 1232) == 615.5         # north is the middle of the panorama
    assert panorama_column(panorama_azimuth(17.25, 1232), 1232) == pytest.approx(17.25)


def test_aerial_azimuth_compass_points():
    size = (3, 3)  # centre pixel (1, 1)
    assert aerial_azimuth(1, 2, size) == 0.0      # below the centre: south
    assert aerial_azimuth(0, 1, size) == 90.0     # left: west
    assert aerial_azimuth(1, 0, size) == 180.0    # up: north
    assert aerial_azimuth(2, 1, size) == 270.0    # right: east
    assert aerial_azimuth(0, 2, size) == pytest.approx(45.0)   # south-west
    assert aerial_azimuth(2, 0, size) == pytest.approx(225.0)  # north-east
    assert aerial_azimuth(374.5, 700, (750, 750)) == 0.0     # even size: the centre lies between pixels


@given(azimuth=st.floats(0, 359.999), radius=st.floats(0.5, 300))
def test_aerial_point_inverts_aerial_azimuth(azimuth, radius):
    x, y = aerial_point(azimuth, radius, (750, 750))
    assert abs(wrap_degrees(aerial_azimuth(x, y, (750, 750)) - azimuth)) < 1e-6
    assert math.hypot(x - 374.5, y - 374.5) == pytest.approx(radius)


@given(angle=ANGLE)
def test_wrap_is_in_range_and_a_multiple_of_360_away(angle):
    wrapped = wrap_degrees(angle)
    assert -180.0 <= wrapped < 180.0
    turns = (angle - wrapped) / 360.0
    assert abs(turns - round(turns)) < 1e-9


def test_wrap_and_error_edges():
    assert wrap_degrees(180.0) == -180.0 and wrap_degrees(-180.0) == -180.0 and wrap_degrees(540.0) == -180.0
    assert wrap_degrees(359.0) == -1.0 and wrap_degrees(360.0) == 0.0
    assert -180.0 <= wrap_degrees(-1e-300) < 180.0 and -180.0 <= wrap_degrees(180.0 - 1e-14) < 180.0
    assert orientation_error(1.0, 359.0) == 2.0      # truth 1, estimate 359: 2 degrees short, not -358
    assert orientation_error(359.0, 1.0) == -2.0
    assert orientation_error(0.0, 180.0) == -180.0   # the half-open end


def test_cell_centres_invert_the_sampling_convention():
    x, y = cell_centre_pixels((2, 4), (64, 128))
    assert x.tolist() == [15.5, 47.5, 79.5, 111.5] * 2 and y.tolist() == [15.5] * 4 + [47.5] * 4
    assert panorama_cell_azimuths((2, 4)).tolist() == [45.0, 135.0, 225.0, 315.0] * 2
    # the panorama cell azimuth is phi_s of the cell's centre pixel, whatever the image width
    assert np.allclose(panorama_azimuth(x, 128), panorama_cell_azimuths((2, 4)))
    assert np.allclose(aerial_cell_azimuths((16, 16), (512, 512)), aerial_cell_azimuths((16, 16), (750, 750)))


# --- the estimators on perfect maps --------------------------------------------------------------

# 5x5 aerial grid: the cells at exact compass azimuths (row, column)
COMPASS = {0: (4, 2), 45: (4, 0), 90: (2, 0), 135: (0, 0), 180: (0, 2), 225: (0, 4), 270: (2, 4), 315: (4, 4)}
CASES = [  # (aerial azimuth, panorama column of 360, truth as a user would write it)
    (45, 0, 44.5),        # quadrant 1
    (135, 0, 134.5),      # quadrant 2
    (270, 40, 229.5),     # quadrant 3
    (315, 0, 314.5),      # quadrant 4
    (0, 0, -0.5),         # wrap-around: the estimate is 359.5
    (0, 358, 361.5),      # wrap-around: the estimate is 1.5
]


def _one_hot(shape, cell):
    m = torch.zeros(shape)
    m[(0, *cell)] = 1.0
    return m


@pytest.mark.parametrize("aerial_angle,column,truth", CASES)
def test_perfect_maps_give_theta_back(aerial_angle, column, truth):
    panorama = _one_hot((1, 1, 360), (0, column))                  # phi_s = column + 0.5
    aerial = _one_hot((1, 5, 5), COMPASS[aerial_angle])
    (overall,) = estimate_from_maps(panorama, aerial)
    assert overall.estimate == pytest.approx(wrap_degrees(truth) % 360, abs=1e-9)
    assert orientation_error(truth, overall.estimate) == pytest.approx(0.0, abs=1e-9)
    assert not overall.flagged and overall.panorama_cell == column

    # point-specific: the aerial overall map points elsewhere (a decoy), the point-specific map of u* does not
    decoy = _one_hot((1, 5, 5), COMPASS[(aerial_angle + 90) % 360])
    rows = torch.zeros(1, 360, 25)
    rows[0, column, 5 * COMPASS[aerial_angle][0] + COMPASS[aerial_angle][1]] = 1.0

    def point_specific(cells):
        return rows[torch.arange(1).unsqueeze(1), cells].view(1, cells.shape[1], 5, 5)

    (wrong,) = estimate_from_maps(panorama, decoy)
    assert abs(orientation_error(truth, wrong.estimate)) == pytest.approx(90.0)
    (right,) = estimate_point_specific(panorama, point_specific)
    assert orientation_error(truth, right.estimate) == pytest.approx(0.0, abs=1e-9)
    (robust,) = estimate_top_k(panorama, point_specific, top_k=3)
    assert orientation_error(truth, robust.estimate) == pytest.approx(0.0, abs=1e-9)


def test_flagged_maps_and_ties():
    panorama = torch.zeros(1, 1, 8)        # nothing positive: the argmax is arbitrary, so the estimate is flagged
    aerial = _one_hot((1, 5, 5), COMPASS[90])
    (estimate,) = estimate_from_maps(panorama, aerial)
    assert estimate.flagged and estimate.panorama_cell == 0      # ties: first cell in raster order
    nan = aerial.clone()
    nan[0, 0, 0] = float("nan")
    (estimate,) = estimate_from_maps(_one_hot((1, 1, 8), (0, 2)), nan)
    assert estimate.flagged and estimate.aerial_cell == 5 * 2 + 0


def test_top_k_maxima_take_the_mode_not_the_mean():
    """Two panorama cells agree on 100 degrees, one outlier says 280: the single argmax follows the outlier
    (it is the panorama's top cell); the weighted mode of the top 3 maxima finds the agreeing pair."""
    panorama = torch.zeros(1, 1, 4)                                 # phi_s = 45, 135, 225, 315
    panorama[0, 0, 0], panorama[0, 0, 1], panorama[0, 0, 2] = 3.0, 2.0, 1.0
    grid = torch.zeros(1, 4, 5, 5)                                   # point-specific maps of the 4 cells
    grid[0, 0][COMPASS[315]] = 1.0        # cell 0 (45): votes 270
    grid[0, 1][COMPASS[225]] = 1.0        # cell 1 (135): votes 90
    grid[0, 2][COMPASS[315]] = 1.0        # cell 2 (225): votes 90

    def point_specific(cells):
        return grid[0, cells[0]].unsqueeze(0)

    (single,) = estimate_point_specific(panorama, point_specific)
    (robust,) = estimate_top_k(panorama, point_specific, top_k=3)
    assert single.estimate == pytest.approx(270.0) and robust.estimate == pytest.approx(90.0)
    assert robust.panorama_cell == 1 and robust.aerial_cell == 4 and not robust.flagged   # heaviest vote in the mode


def test_estimators_refuse_bad_maps():
    with pytest.raises(ArgumentError, match="panorama_map"):
        estimate_from_maps(torch.zeros(4, 4), torch.zeros(1, 3, 3))
    with pytest.raises(ArgumentError, match="aerial_map"):
        estimate_from_maps(torch.zeros(2, 1, 4), torch.zeros(1, 3, 3))
    with pytest.raises(ArgumentError, match="top_k"):
        estimate_top_k(torch.zeros(1, 1, 4), lambda c: torch.zeros(1, 1, 3, 3), top_k=0)


# --- rotation ------------------------------------------------------------------------------------


def _dot_image(size, azimuth, radius, spread=1.5):
    """A Gaussian dot at (azimuth, radius) on black, (3, size, size)."""
    x, y = aerial_point(azimuth, radius, (size, size))
    yy, xx = np.mgrid[0:size, 0:size]
    dot = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * spread ** 2))
    return torch.from_numpy(np.repeat(dot[None], 3, 0)).float()


def _centroid_azimuth(image):
    weights = image[0].double().numpy()
    size = weights.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    return aerial_azimuth((weights * xx).sum() / weights.sum(), (weights * yy).sum() / weights.sum(), (size, size))


def test_quarter_turns_are_exact_and_clockwise():
    image = torch.zeros(3, 5, 5)
    image[:, 4, 2] = 1.0                                      # south of the centre
    west = rotate_aerial(image, 90.0)
    assert west[0, 2, 0] == 1.0 and west.sum() == 3.0         # now west: azimuth + 90
    assert torch.equal(rotate_aerial(image, -270.0), west) and torch.equal(rotate_aerial(image, 360.0), image)
    assert torch.equal(rotate_aerial(rotate_aerial(image, 90.0), 270.0), image)
    # the generic (resampling) path agrees with the exact one next to it
    assert torch.allclose(rotate_aerial(_dot_image(33, 10, 9), 90.0 + 1e-6), rotate_aerial(_dot_image(33, 10, 9), 90.0),
                          atol=1e-4)


@pytest.mark.parametrize("theta", [37.3, 161.0, 222.5, 341.9, -20.0])
def test_rotation_moves_content_by_theta(theta):
    image = _dot_image(101, 70.0, 30.0)
    rotated = rotate_aerial(image, theta)
    assert abs(wrap_degrees(_centroid_azimuth(rotated) - (70.0 + theta))) < 0.5
    back = rotate_aerial(rotated, -theta)
    assert abs(wrap_degrees(_centroid_azimuth(back) - 70.0)) < 0.5


def test_fills():
    flat = torch.full((3, 40, 40), 0.7)
    assert torch.allclose(rotate_aerial(flat, 30.0, "reflect"), flat)     # reflection leaves no empty corners
    disc = rotate_aerial(flat, 30.0, "disc")
    mask = disc_mask((40, 40))
    assert torch.allclose(disc[:, mask], torch.tensor(0.7)) and (disc[:, ~mask] == 0).all()
    assert (rotate_aerial(flat, 0.0, "disc")[:, ~mask] == 0).all()           # the same crop at every angle
    batch = rotate_aerial(torch.stack([flat, flat]), [0.0, 45.0], "disc")
    assert batch.shape == (2, 3, 40, 40)
    with pytest.raises(ArgumentError, match="square"):
        rotate_aerial(torch.zeros(3, 40, 41), 10.0)
    with pytest.raises(ArgumentError, match="fill"):
        rotate_aerial(flat, 10.0, "zeros")


def test_random_rotations_depend_on_seed_and_pair_only():
    a = random_rotations(["p1", "p2", "p3"], 2, seed=5)
    b = random_rotations(["p3", "p1"], 2, seed=5)
    assert a["p1"] == b["p1"] and a["p3"] == b["p3"] and a["p1"] != random_rotations(["p1"], 2, seed=6)["p1"]
    assert all(0 <= v < 360 and len(vs) == 2 for vs in a.values() for v in vs)
    assert rotations_for(["x", "y"], [10, 20]) == {"x": [10.0, 20.0], "y": [10.0, 20.0]}
    with pytest.raises(ArgumentError, match="no rotation"):
        rotations_for(["x", "y"], {"x": [1.0]})
    with pytest.raises(ArgumentError, match="finite"):
        rotations_for(["x"], [float("nan")])


# --- histogram and summary -----------------------------------------------------------------------


def test_histogram_bins_are_centred_on_zero_and_symmetric():
    assert histogram_bin([0.0, 3.5, -3.5, 3.5000001, 10.5, -10.5, 178.5, 178.6, -178.5, -180.0]).tolist() == \
        [0.0, 0.0, 0.0, 7.0, 7.0, -7.0, 175.0, 180.0, -175.0, 180.0]
    bins = histogram_bins()
    assert len(bins) == 52 and bins[25] == (0.0, -3.5, 3.5) and bins[-1] == (180.0, 178.5, 181.5)


@settings(max_examples=50)
@given(errors=st.lists(st.floats(-180, 179.999999), min_size=1, max_size=40))
def test_histogram_counts_every_error_once_and_bin_zero_is_within_3_5(errors):
    rows = [{"overall_map": "decomposition", "method": "overall", "aerial_fill": "reflect", "error": e,
             "map_flagged": False} for e in errors]
    histogram = pd.DataFrame(orientation_histogram(rows))
    assert histogram["count"].sum() == len(errors)
    (summary,) = orientation_summary(rows)
    assert histogram.loc[histogram["bin_centre"] == 0, "share"].item() == pytest.approx(summary["within_3_5"])
    for error, centre in zip(errors, histogram_bin(errors), strict=True):
        low, high = next((b[1], b[2]) for b in histogram_bins() if b[0] == centre)
        assert (low <= error <= high) or (centre == 180.0 and abs(error) >= 178.5)


def test_summary_values():
    rows = [{"overall_map": "decomposition", "method": m, "aerial_fill": "disc", "error": e, "map_flagged": f}
            for m, e, f in [("overall", 0.0, False), ("overall", 3.5, False), ("overall", -5.0, False),
                            ("overall", 20.0, True), ("overall", -100.0, False), ("point_specific", 1.0, False)]]
    summary = {s["method"]: s for s in orientation_summary(rows)}
    s = summary["overall"]
    assert (s["within_3_5"], s["within_10"], s["within_30"]) == (0.4, 0.6, 0.8)
    assert s["median_abs_error"] == 5.0 and s["mean_abs_error"] == pytest.approx(25.7) and s["count"] == 5
    assert s["flagged"] == 1 and s["chance_within_3_5"] == pytest.approx(7 / 360)
    assert summary["point_specific"]["within_3_5"] == 1.0
    frame("orientation_summary", orientation_summary(rows))        # fits its schema
    frame("orientation_histogram", orientation_histogram(rows))
    assert orientation_summary([]) == [] and orientation_histogram([]) == []


# --- on real explanations ------------------------------------------------------------------------


def _brute_force(explanation, bias):
    """The rules written out over P, with angles from the pixel formulas (no cell shortcuts)."""
    p = explanation.point_to_point[0]                                  # (hs, ws, ha, wa)
    hs, ws, ha, wa = p.shape
    if bias:
        panorama = explanation.overall("query", bias=True)[0]
        aerial = explanation.overall("retrieved", bias=True)[0]
    else:
        panorama, aerial = p.sum((2, 3)), p.sum((0, 1))
    ps_size, a_size = explanation.input_sizes["query"], explanation.input_sizes["retrieved"]

    def pixel(index, grid, size):
        i, j = divmod(int(index), grid[1])
        return (j + 0.5) * size[1] / grid[1] - 0.5, (i + 0.5) * size[0] / grid[0] - 0.5

    u, _ = pixel(panorama.argmax(), (hs, ws), ps_size)
    phi_s = 360 * (u + 0.5) / ps_size[1]
    x, y = pixel(aerial.argmax(), (ha, wa), a_size)
    cx, cy = (a_size[1] - 1) / 2, (a_size[0] - 1) / 2
    overall = (math.degrees(math.atan2(-(x - cx), y - cy)) - phi_s) % 360
    star = divmod(int(panorama.argmax()), ws)
    x, y = pixel(p[star].argmax(), (ha, wa), a_size)
    point_specific = (math.degrees(math.atan2(-(x - cx), y - cy)) - phi_s) % 360
    return overall, point_specific


@pytest.mark.parametrize("overall_map", ["decomposition", "decomposition_bias"])
def test_estimators_match_a_brute_force_reference(tiny_crossview, overall_map):
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        panorama, aerial = torch.rand(1, 3, 32, 176, generator=g), torch.rand(1, 3, 64, 64, generator=g)
        explanation = tiny_crossview.explain(panorama, aerial)
        results = estimate_orientations(explanation, overall_map, top_k=5)
        assert set(results) == set(orientation_methods(5))
        overall, point_specific = _brute_force(explanation, overall_map == "decomposition_bias")
        assert results["overall"][0].estimate == pytest.approx(overall, abs=1e-6)
        assert results["point_specific"][0].estimate == pytest.approx(point_specific, abs=1e-6)


def test_estimate_orientation_rows_and_errors(tiny_crossview, tiny_crossview_dataset, tmp_path):
    from dataclasses import replace

    from PIL import Image

    pairs = tiny_crossview_dataset.pairs[:3]
    broken = tmp_path / "wide.png"
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(broken)
    changed = replace(pairs[1], aerial=str(broken))     # the file changed since the dataset was loaded
    rotations = random_rotations([p.pair_id for p in pairs], 2, seed=0)
    rows, errors = estimate_orientation(tiny_crossview, [pairs[0], changed, pairs[2]], rotations,
                                        overall_maps=("decomposition", "decomposition_bias"), batch_size=3)
    assert len(rows) == 2 * 2 * 2 * 3          # 2 readable pairs x 2 rotations x 2 overall maps x 3 methods
    assert len(errors) == 1 and errors[0].item == changed.pair_id and "not square" in errors[0].problem
    assert errors[0].file == str(broken)
    table = frame("orientation_items", rows)
    assert set(table["method"]) == set(orientation_methods()) and set(table["pair_id"]) == {pairs[0].pair_id,
                                                                                             pairs[2].pair_id}
    expected = [orientation_error(t, e) for t, e in zip(table["truth"], table["estimate"], strict=True)]
    assert np.allclose(table["error"], expected)
    assert table["abs_error"].between(0, 180).all() and table["rotation"].isin(sum(rotations.values(), [])).all()
    # chosen pixels are in the pair's own image coordinates and carry their azimuths
    first = table.iloc[0]
    assert 0 <= first["panorama_x"] < pairs[0].panorama_size[1] and 0 <= first["aerial_y"] < pairs[0].aerial_size[0]
    assert first["panorama_azimuth"] == pytest.approx(panorama_azimuth(first["panorama_x"], pairs[0].panorama_size[1]))
    assert first["aerial_azimuth"] == pytest.approx(aerial_azimuth(first["aerial_x"], first["aerial_y"],
                                                                   pairs[0].aerial_size))
    # sharding does not change a pair's rows
    alone, _ = estimate_orientation(tiny_crossview, [pairs[2]], rotations, overall_maps=("decomposition",))
    same = table[(table["pair_id"] == pairs[2].pair_id) & (table["overall_map"] == "decomposition")]
    assert np.allclose(sorted(r["estimate"] for r in alone), sorted(same["estimate"]))


def test_estimate_orientation_refuses_bad_arguments(tiny_crossview, tiny_crossview_dataset):
    pairs = tiny_crossview_dataset.pairs[:1]
    with pytest.raises(ArgumentError, match="overall_maps"):
        estimate_orientation(tiny_crossview, pairs, [0.0], overall_maps=("gradcam",))
    with pytest.raises(ArgumentError, match="fill"):
        estimate_orientation(tiny_crossview, pairs, [0.0], fill="black")


# --- figures -------------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def test_histogram_and_example_figures_are_png_bytes(tiny_crossview, tiny_crossview_dataset):
    from eml_core.orientation_figures import histogram_png, render_example

    rows = [{"overall_map": "decomposition", "method": m, "aerial_fill": "reflect", "error": e, "map_flagged": False}
            for m in ("overall", "point_specific") for e in (-20.0, 0.5, 2.0, 90.0)]
    width, height = _png_size(histogram_png(orientation_histogram(rows)))
    assert width > 2 * height                                   # two panels side by side
    with pytest.raises(ArgumentError, match="no histogram rows for point_specific_top10"):
        histogram_png(orientation_histogram(rows), methods=("overall", "point_specific_top10"))
    with pytest.raises(ArgumentError, match="no histogram rows"):
        histogram_png([])
    pair = tiny_crossview_dataset.split("val")[0]
    width, height = _png_size(render_example(tiny_crossview, pair, 123.0))
    assert width > 500 and height > 300
