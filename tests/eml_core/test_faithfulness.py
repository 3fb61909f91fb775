"""Deletion / insertion on the similarity, ROAD imputation, point-specific faithfulness and their summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torch.nn import functional

from eml_core import EmbeddingModel, Preprocessing, build_head, explain_pair
from eml_core.errors import ArgumentError
from eml_core.faithfulness import (
    CURVES,
    GRADIENT_ORACLE,
    RANDOM,
    ROAD_NEIGHBOURS,
    ImagePair,
    area_under_curve,
    count_forward_passes,
    curve_areas,
    evaluate_faithfulness,
    evaluate_point_faithfulness,
    most_faithful,
    pixel_ranks,
    point_methods,
    remove,
    road_impute,
    step_counts,
    summarise_faithfulness,
)
from eml_core.faithfulness_figures import curves_figure
from eml_core.methods import DEFAULT_METHODS, method_maps
from eml_core.tables import frame
from tests.conftest import tiny_model
from tests.hostile.harness import record
from tests.hostile.images import random_rgb

# ---------------------------------------------------------------------------------------------
# a hand-built model whose similarity depends on one known image region only

SIZE = 64           # image side (pixels)
CELL = 8            # the backbone's stride: an 8 x 8 grid of cells
REGION = (slice(16, 32), slice(32, 48))   # rows, columns of the region: feature cells (2..3, 4..5), 6.25% of pixels


class RegionColours(nn.Module):
    """A = the mean colour of every 8 x 8 cell, zero outside the cells of REGION: nothing else reaches E."""

    def __init__(self, gate: torch.Tensor):
        super().__init__()
        self.register_buffer("gate", gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.avg_pool2d(x, CELL) * self.gate


def region_model() -> EmbeddingModel:
    gate = torch.zeros(SIZE // CELL, SIZE // CELL)
    gate[REGION[0].start // CELL:REGION[0].stop // CELL, REGION[1].start // CELL:REGION[1].stop // CELL] = 1
    head = build_head("gap_fc", 3, 3)
    with torch.no_grad():
        head[2].weight.copy_(torch.eye(3))
        head[2].bias.zero_()
    preprocessing = Preprocessing(input_size=(SIZE, SIZE), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return EmbeddingModel(RegionColours(gate), head, preprocessing, stride=CELL).eval()


def region_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[REGION] = True
    return mask


def write_pair(folder, name: str, seed: int, patch_q=(0.85, 0.05, 0.05), patch_r=(0.75, 0.35, 0.05)) -> ImagePair:
    """Bluish noise everywhere; a textured red (query) / orange (retrieved) patch in REGION."""
    rng = np.random.default_rng(seed)
    paths = []
    for side, patch in (("q", patch_q), ("r", patch_r)):
        image = np.stack([0.1 * rng.random((SIZE, SIZE)), 0.1 * rng.random((SIZE, SIZE)),
                          0.4 + 0.4 * rng.random((SIZE, SIZE))], axis=-1)
        image[REGION] = np.asarray(patch) + 0.1 * rng.random((16, 16, 3))
        path = folder / f"{name}-{side}.png"
        Image.fromarray(np.uint8(np.clip(image, 0, 1) * 255 + 0.5)).save(path)
        paths.append(str(path))
    return ImagePair(name, *paths)


FAITHFUL_ON_REGION_MODEL = ("decomposition", "decomposition_bias", "gradcam_nonorm")


@pytest.mark.parametrize("removal", ["blur", "mean", "road"])
def test_faithful_maps_lose_the_similarity_at_the_step_that_removes_the_region_and_random_does_not(tmp_path, removal):
    model = region_model()
    pairs = [write_pair(tmp_path, f"pair{n}", seed=n) for n in range(3)]
    steps = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)   # REGION is 6.25% of the pixels: covered by the 10% step
    rows, errors = evaluate_faithfulness(model, pairs, removals=removal, steps=steps, sides=("query",),
                                         blur_sigma=0.25, seed=3)
    assert errors == []
    curves = pd.DataFrame(rows)
    deletion = curves[curves["curve"] == "deletion"]
    covered = steps.index(0.1)
    random_drops = []
    for pair in pairs:
        from eml_core.faithfulness import network_pixels
        from eml_core.images import load_image

        query = network_pixels(model, load_image(pair.query).pixels)
        retrieved = network_pixels(model, load_image(pair.retrieved).pixels)
        without_region = remove(query, region_mask(), removal, blur_sigma=0.25)[0]
        with torch.no_grad():
            e = model(torch.stack([query, without_region, retrieved]))
        s0, s_region = (float(functional.cosine_similarity(e[i], e[2], dim=0)) for i in (0, 1))
        assert s0 - s_region > 0.05, "the region carries the similarity"

        def normalised_drop(method, pair=pair, s0=s0, s_region=s_region):
            line = deletion[(deletion["pair_id"] == pair.pair_id) & (deletion["method"] == method)]
            value = float(line.loc[line["step"] == covered, "similarity"].iloc[0])
            assert float(line.loc[line["step"] == 0, "similarity"].iloc[0]) == pytest.approx(s0, abs=1e-5)
            return (s0 - value) / (s0 - s_region)

        for method in FAITHFUL_ON_REGION_MODEL:
            assert normalised_drop(method) > 0.9, (method, pair.pair_id)
        random_drops.append(normalised_drop(RANDOM))
    assert np.mean(random_drops) < 0.5, random_drops


def test_gradcam_on_the_cosine_sums_to_zero_over_positions_with_a_bias_free_gap_head(tmp_path):
    """Why Grad-CAM is not on the faithful list above: dS/dE_q is orthogonal to E_q for the cosine, so with
    E_q = sum_p W A_p / hw its map sum_p alpha . A_p = hw dS/dE_q . E_q = 0 -- it ranks positions by how they
    would turn E_q, not by their share of S."""
    model = region_model()
    pair = write_pair(tmp_path, "p", seed=0)
    from eml_core.faithfulness import network_pixels
    from eml_core.images import load_image

    q = network_pixels(model, load_image(pair.query).pixels)
    r = network_pixels(model, load_image(pair.retrieved).pixels)
    maps = method_maps(explain_pair(model, q, r), ("gradcam", "decomposition_bias"))
    assert abs(float(maps["gradcam"]["query"].sum())) < 1e-6 * float(maps["decomposition_bias"]["query"].abs().sum())


# ---------------------------------------------------------------------------------------------
# ROAD's noisy linear imputation


def ramp(height=20, width=24) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([0.1 + 0.03 * x, 0.9 - 0.02 * y, 0.2 + 0.01 * x + 0.015 * y])


def test_road_imputation_is_exact_on_a_linear_ramp_and_keeps_known_pixels():
    image = ramp()
    mask = np.zeros(image.shape[1:], dtype=bool)
    mask[3:15, 4:20] = True          # a large hole
    mask[17, 2] = mask[1, 21] = True  # isolated pixels
    filled = road_impute(image, mask)
    assert np.allclose(filled, image, atol=1e-12)
    noisy = road_impute(image, mask, noise=0.01, rng=np.random.default_rng(0))
    assert np.array_equal(noisy[:, ~mask], image[:, ~mask])           # known pixels untouched
    assert 0.005 < np.std(noisy[:, mask] - image[:, mask]) < 0.015    # noise of the asked std on the imputed ones


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.95))
def test_road_reproduces_any_ramp_when_no_removed_pixel_touches_the_border(seed, fraction):
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-0.015, 0.015, size=(2, 3))   # stays inside [0, 1] (pixels are clipped to it)
    y, x = np.mgrid[0:16, 0:16].astype(np.float64)
    image = 0.5 + a[:, None, None] * (x - 7.5) + b[:, None, None] * (y - 7.5)
    mask = np.zeros((16, 16), dtype=bool)
    mask[1:-1, 1:-1] = rng.random((14, 14)) < fraction
    assert np.allclose(road_impute(image, mask), image, atol=1e-10)


def test_road_imputation_solves_the_neighbour_average_equations_of_a_brute_force_reference():
    """Against a dense reference built pixel by pixel: every removed pixel equals the weighted mean of its
    neighbours inside the image (weights 1/6 direct, 1/12 diagonal, renormalised at the border)."""
    rng = np.random.default_rng(1)
    image = rng.random((3, 9, 11))
    mask = rng.random((9, 11)) < 0.4
    mask[0, :] = True  # the border too
    unknown = [tuple(p) for p in np.argwhere(mask)]
    index = {p: i for i, p in enumerate(unknown)}
    dense = np.zeros((len(unknown), len(unknown)))
    rhs = np.zeros((len(unknown), 3))
    for (y, x), i in index.items():
        for (dy, dx), weight in ROAD_NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < 9 and 0 <= nx < 11:
                dense[i, i] += weight
                if mask[ny, nx]:
                    dense[i, index[(ny, nx)]] -= weight
                else:
                    rhs[i] += weight * image[:, ny, nx]
    reference = np.linalg.solve(dense, rhs)
    filled = road_impute(image, mask)
    assert np.allclose(filled[:, mask].T, reference, atol=1e-10)
    assert np.array_equal(filled[:, ~mask], image[:, ~mask])


def test_road_with_every_pixel_removed_fills_the_mean_colour():
    image = ramp(6, 7)
    filled = road_impute(image, np.ones((6, 7), dtype=bool))
    assert np.allclose(filled, image.mean(axis=(1, 2), keepdims=True) * np.ones_like(image))


def test_blur_and_mean_removal_change_only_the_removed_pixels():
    import cv2

    pixels = torch.from_numpy(ramp()).float()
    masks = np.zeros((2, 20, 24), dtype=bool)
    masks[0, 5:9, 5:9] = True
    masks[1, :, :3] = True
    for removal in ("blur", "mean", "road"):
        out = remove(pixels, masks, removal)
        assert out.shape == (2, 3, 20, 24)
        for k in range(2):
            assert torch.equal(out[k][:, ~torch.from_numpy(masks[k])], pixels[:, ~torch.from_numpy(masks[k])])
    mean = remove(pixels, masks, "mean")
    assert torch.allclose(mean[0][:, 5, 5], pixels.mean(dim=(1, 2)))
    sigma = 0.05 * 20
    blurred = cv2.GaussianBlur(np.ascontiguousarray(ramp().transpose(1, 2, 0)), (0, 0), sigma, sigmaY=sigma,
                               borderType=cv2.BORDER_REFLECT)
    assert np.allclose(remove(pixels, masks, "blur")[0][:, 6, 6].numpy(), blurred[6, 6], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# orderings, counts and areas


def test_pixel_ranks_follow_the_map_and_break_ties_at_random_but_reproducibly():
    values = np.array([[0.1, 0.9], [0.5, np.nan]])
    assert pixel_ranks(values, np.random.default_rng(0)).tolist() == [2, 0, 1, 3]  # NaN last
    flat = np.zeros((4, 4))
    first = pixel_ranks(flat, np.random.default_rng(5))
    assert sorted(first.tolist()) == list(range(16))
    assert np.array_equal(first, pixel_ranks(flat, np.random.default_rng(5)))
    assert not np.array_equal(first, np.arange(16)), "ties are not broken by position"
    assert step_counts((0.0, 0.02, 0.5, 1.0), 50176) == [0, 1004, 25088, 50176]


def test_area_under_curve_is_the_trapezoid_rule_over_uneven_fractions():
    assert area_under_curve((0, 0.5, 1), (1, 0.5, 0)) == pytest.approx(0.5)
    # (0.1 * (1 + 0.8) + 0.9 * (0.8 + 0.2)) / 2
    assert area_under_curve((0, 0.1, 1), (1, 0.8, 0.2)) == pytest.approx(0.54)


def test_arguments_out_of_their_domain_are_named():
    model = tiny_model("gap_fc")
    with pytest.raises(ArgumentError, match="steps: fractions must increase strictly from 0 to 1"):
        evaluate_faithfulness(model, [], steps=(0.1, 0.5, 1.0))
    with pytest.raises(ArgumentError, match="removal: unknown removal 'erase'; choose from blur, mean, road"):
        evaluate_faithfulness(model, [], removals=("erase",))
    with pytest.raises(ArgumentError, match="methods: unknown method 'nope'"):
        evaluate_faithfulness(model, [], methods=("nope",))
    with pytest.raises(ArgumentError, match="region_fraction"):
        evaluate_point_faithfulness(model, [], region_fraction=1.5)


# ---------------------------------------------------------------------------------------------
# batching and cost


@pytest.fixture(scope="module")
def noise_pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noise")
    paths = [str(random_rgb(folder / f"{n}.png", (30 + 2 * n, 40), seed=n)) for n in range(4)]
    return [ImagePair(f"p{n}", paths[n], paths[(n + 1) % 4]) for n in range(3)]


def test_batched_forwards_give_the_rows_of_one_forward_per_image_at_a_fraction_of_the_calls(noise_pairs, cpu_threads):
    model = tiny_model("gap_fc", (24, 32))
    steps = (0.0, 0.1, 0.5, 1.0)
    runs = {}
    for batch_size in (1, 64):
        with count_forward_passes(model) as count:
            rows, errors = evaluate_faithfulness(model, noise_pairs[:2], removals=("mean", "road"), steps=steps,
                                                 batch_size=batch_size)
        assert errors == []
        runs[batch_size] = (pd.DataFrame(rows), count)
    pairs, sides, orderings, removals = 2, 2, len(DEFAULT_METHODS) + 2, 2
    per_removal = pairs * sides * (2 + orderings * len(CURVES) * (len(steps) - 2))
    explain_and_gradients = 4 * pairs
    for table, count in runs.values():
        assert len(table) == removals * pairs * sides * orderings * len(CURVES) * len(steps)
        assert count.images == explain_and_gradients + removals * per_removal
    assert runs[1][1].calls == 4 + removals * per_removal
    assert runs[64][1].calls == 4 + removals * math.ceil(per_removal / 64)
    merged = runs[1][0].merge(runs[64][0], on=["pair_id", "side", "method", "removal", "curve", "step"])
    assert len(merged) == len(runs[1][0])
    assert np.allclose(merged["similarity_x"], merged["similarity_y"], atol=1e-5)


def test_curves_share_their_end_points_and_fit_the_table(noise_pairs):
    model = tiny_model("gap_fc", (24, 32))
    rows, _ = evaluate_faithfulness(model, noise_pairs[:2], removals="blur", steps=(0.0, 0.5, 1.0))
    table = frame("faithfulness_curves", rows)
    for _, group in table.groupby(["pair_id", "side"]):
        deletion = group[group["curve"] == "deletion"]
        insertion = group[group["curve"] == "insertion"]
        assert deletion.loc[deletion["step"] == 0, "similarity"].nunique() == 1   # the intact image, every method
        assert np.allclose(deletion.loc[deletion["step"] == 2, "similarity"].to_numpy(),
                           insertion.loc[insertion["step"] == 0, "similarity"].to_numpy())
    assert set(table["method"]) == {*DEFAULT_METHODS, RANDOM, GRADIENT_ORACLE}


# ---------------------------------------------------------------------------------------------
# bad input: the shard goes on


def test_unreadable_images_and_zero_embeddings_become_error_rows_and_the_rest_goes_on(tmp_path):
    model = region_model()
    good = write_pair(tmp_path, "good", seed=0)
    black = write_pair(tmp_path, "black", seed=1, patch_q=(0.0, 0.0, 0.0))
    patch = np.asarray(Image.open(black.query)).copy()
    patch[REGION] = 0
    Image.fromarray(patch).save(black.query)          # the region is black: E_q = 0, cosine undefined
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    pairs = [good, ImagePair("missing", str(tmp_path / "absent.png"), good.retrieved),
             ImagePair("broken", good.query, str(tmp_path / "broken.png")), black]
    steps = (0.0, 0.5, 1.0)
    rows, errors = evaluate_faithfulness(model, pairs, removals="mean", steps=steps, sides=("query",))
    assert {r["pair_id"] for r in rows} == {"good"}
    problems = {e.item: e.problem for e in errors}
    assert set(problems) == {"missing", "broken", "black"}
    assert "absent.png: file does not exist" in problems["missing"]
    assert "retrieved image cannot be used" in problems["broken"]
    assert "zero norm" in problems["black"]
    record("evaluate_faithfulness", "missing / corrupt image, zero embedding", "errors_row")
    points, point_errors = evaluate_point_faithfulness(model, pairs, removal="mean")
    assert {r["pair_id"] for r in points} == {"good"}
    assert {e.item for e in point_errors} == {"missing", "broken", "black"}
    record("evaluate_point_faithfulness", "missing / corrupt image, zero embedding", "errors_row")


def test_a_failed_forward_pass_leaves_its_pairs_out_with_an_error_and_keeps_the_others(noise_pairs, monkeypatch):
    model = tiny_model("gap_fc", (24, 32))
    original = model.backbone.forward
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 6:   # after the explanation and gradient passes: the second batch of perturbed images
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(x)

    monkeypatch.setattr(model.backbone, "forward", flaky)
    rows, errors = evaluate_faithfulness(model, noise_pairs, removals="mean", steps=(0.0, 0.5, 1.0), batch_size=8)
    assert errors and all("forward pass failed: CUDA out of memory (simulated)" in e.problem for e in errors)
    failed = {e.item for e in errors}
    assert failed and {r["pair_id"] for r in rows} == {p.pair_id for p in noise_pairs} - failed
    record("evaluate_faithfulness", "forward pass raises mid-shard", "errors_row", kind="fault")


# ---------------------------------------------------------------------------------------------
# point-specific faithfulness


def colour_model() -> EmbeddingModel:
    """A = mean colour of every 8 x 8 cell; E = its spatial mean (GAP): every pixel counts, linearly."""
    gate = torch.ones(SIZE // CELL, SIZE // CELL)
    preprocessing = Preprocessing(input_size=(SIZE, SIZE), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return EmbeddingModel(RegionColours(gate), build_head("gap", 3), preprocessing, stride=CELL).eval()


def test_removing_the_top_region_of_a_point_specific_map_lowers_that_pixels_partial_similarity_most(tmp_path):
    """Query: left half red, right half green; retrieved: top half red, bottom half green. For the query's
    red pixels the point-specific map on the retrieved image marks its red half; removing it costs the
    pixel's partial similarity more than removing random regions of the same area."""
    rng = np.random.default_rng(0)
    red, green = np.array([0.9, 0.1, 0.1]), np.array([0.1, 0.8, 0.1])
    query = np.where((np.arange(SIZE) < SIZE // 2)[None, :, None], red, green) + 0.05 * rng.random((SIZE, SIZE, 3))
    retrieved = np.where((np.arange(SIZE) < SIZE // 2)[:, None, None], red, green) + 0.05 * rng.random((SIZE, SIZE, 3))
    paths = []
    for name, image in (("q", query), ("r", retrieved)):
        Image.fromarray(np.uint8(np.clip(image, 0, 1) * 255 + 0.5)).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    model = colour_model()
    pair = ImagePair("halves", *paths)
    assert "decomposition" in point_methods() and "gradcam" not in point_methods()   # the methods with point maps
    rows, errors = evaluate_point_faithfulness(model, [pair], ("decomposition", "decomposition_bias", "gradcam"),
                                               removal="mean", points_per_pair=3, region_fraction=0.25,
                                               random_regions=8)
    assert errors == []
    assert {r["method"] for r in rows} == {"decomposition", "decomposition_bias"}   # gradcam has no point maps
    from eml_core.faithfulness import network_pixels
    from eml_core.images import load_image

    explanation = explain_pair(model, network_pixels(model, load_image(paths[0]).pixels),
                               network_pixels(model, load_image(paths[1]).pixels))
    # the points are the cells of largest partial similarity, whose value is Decomposition+Bias's at that cell
    top_cells = torch.topk(explanation.overall("query", bias=True).flatten(), 3).values
    for row in rows:
        assert row["partial_similarity"] == pytest.approx(float(top_cells[row["point"]]), rel=1e-5)
        assert row["point_x"] < SIZE // 2, "the largest partial similarities are on the query's red half"
        # the model is linear in the pixels and the mean fill keeps a random region's mean colour on average,
        # so random regions barely move the partial similarity; the point-specific region removes its red
        assert row["drop_top"] > 0.001 and row["drop_top"] > 20 * abs(row["drop_random"])
    frame("faithfulness_points", rows)


def test_point_ratio_is_a_ratio_of_summed_drops_resampled_by_pair_and_undefined_without_random_drops():
    def point(pair, top, random, overall=1.0):
        return {"pair_id": pair, "side": "query", "method": "m", "removal": "mean", "point": 0, "point_x": 0.0,
                "point_y": 0.0, "region_fraction": 0.1, "partial_similarity": 0.5, "drop_top": top,
                "drop_random": random, "drop_overall": overall}

    rows = [point("a", 0.3, 0.1), point("a", 0.1, 0.1), point("b", 0.2, 0.05), point("c", 0.4, 0.2)]
    summary = summarise_faithfulness([], rows, resamples=500)[0]
    assert summary["point_ratio"] == pytest.approx(1.0 / 0.45)
    assert summary["point_ratio_vs_overall"] == pytest.approx(1.0 / 4)
    assert summary["point_pairs"] == 3 and summary["point_ratio_low"] <= summary["point_ratio"] <= summary[
        "point_ratio_high"]
    assert math.isnan(summary["deletion_auc"])
    undefined = summarise_faithfulness([], [point("a", 0.3, -0.1), point("b", 0.2, 0.05)], resamples=100)[0]
    assert math.isnan(undefined["point_ratio"])


# ---------------------------------------------------------------------------------------------
# summaries and figures


def synthetic_curves(pairs=6, seed=0) -> list[dict]:
    """Curves with known areas, all from the intact similarity s0 to 0 (the removed image), through the middle
    value m s0 (deletion) or (1 - m) s0 (insertion): AUC = (1 + 2 m) s0 / 4 and (3 - 2 m) s0 / 4."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(pairs):
        s0 = 0.5 + 0.4 * rng.random()
        for method, middle in (("steep", 0.1), ("flat", 0.9), (RANDOM, 0.5)):
            for curve in CURVES:
                values = (s0, middle * s0, 0.0) if curve == "deletion" else (0.0, (1 - middle) * s0, s0)
                for i, (f, value) in enumerate(zip((0.0, 0.5, 1.0), values, strict=True)):
                    for side in ("query", "retrieved"):
                        rows.append({"pair_id": f"p{p}", "side": side, "method": method, "removal": "mean",
                                     "curve": curve, "step": i, "fraction": f, "similarity": value})
    return rows


def test_summary_means_and_bootstrap_intervals_over_pairs_and_the_most_faithful_method():
    rows = synthetic_curves()
    areas = curve_areas(rows)
    assert len(areas) == 6 * 2 * 3 * 2
    summary = summarise_faithfulness(rows, resamples=500)
    table = frame("faithfulness_summary", summary).set_index("method")
    s0 = pd.DataFrame(rows).query("step == 0 and curve == 'deletion'").groupby("pair_id")["similarity"].first()
    assert table.loc["steep", "deletion_auc"] == pytest.approx(0.3 * s0.mean())
    assert table.loc["flat", "deletion_auc"] == pytest.approx(0.7 * s0.mean())
    assert table.loc["steep", "insertion_auc"] == pytest.approx(0.7 * s0.mean())
    for method in ("steep", "flat"):
        low, mean, high = table.loc[method, ["deletion_auc_low", "deletion_auc", "deletion_auc_high"]]
        assert low < mean < high
    assert bool(table.loc[RANDOM, "reference"]) and not bool(table.loc["steep", "reference"])
    best = {(b["measure"], b["removal"]): b["method"] for b in most_faithful(summary)}
    assert best[("deletion_auc", "mean")] == "steep"      # the random reference is never picked
    assert best[("insertion_auc", "mean")] == "steep"


def test_curves_figure_is_a_png():
    png = curves_figure(synthetic_curves(pairs=3))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_similarity_gradients_match_central_differences_and_the_oracle_is_their_first_order_drop():
    from eml_core.faithfulness import gradient_oracle_map, similarity_gradients

    model = tiny_model("gap_fc", (24, 32)).double()
    model.preprocessing = lambda x: (x - 0.5) / 0.25   # Preprocessing casts to float32: keep float64 here
    generator = torch.Generator().manual_seed(0)
    q = torch.rand(1, 3, 24, 32, generator=generator).double()
    r = torch.rand(1, 3, 24, 32, generator=generator).double()
    gradients = similarity_gradients(model, q, r)
    direction = torch.randn(1, 3, 24, 32, generator=generator).double()
    eps = 1e-5

    def s(x):
        with torch.no_grad():
            return float(functional.cosine_similarity(model(model.preprocessing(x)), model(model.preprocessing(r))))

    numeric = (s(q + eps * direction) - s(q - eps * direction)) / (2 * eps)
    assert float((gradients["query"] * direction).sum()) == pytest.approx(numeric, rel=1e-5)
    removed = torch.full((3, 24, 32), 0.5, dtype=torch.float64)
    oracle = gradient_oracle_map(q[0], gradients["query"][0], removed)
    assert np.allclose(oracle, ((q[0] - removed) * gradients["query"][0]).sum(0).numpy())
