"""Region retrieval: scores from the index against direct computations, model calls counted, what the whole-image
box mean gives per head kind, point-specific maps on retrieved images, montages, and clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from eml_core.decomposition import explain_pair
from eml_core.errors import ArgumentError, ImageError
from eml_core.gallery_index import GalleryIndex, IndexModelMismatchError, build_index
from eml_core.heads import HEAD_KINDS
from eml_core.images import load_image
from eml_core.position_embeddings import position_embeddings
from eml_core.region_retrieval import (
    LABEL_WIDTH,
    Region,
    RegionQuery,
    crop_pixels,
    mask_pixels,
    mean_colour,
    montage,
    png_bytes,
    query_vectors,
    rank_queries,
    region_point_specific_maps,
)
from eml_core.tables import SCHEMAS, frame
from tests.conftest import tiny_model
from tests.hostile.harness import record

ALL = ("partial_centre", "partial_box_mean", "overall", "crop", "mask")


@pytest.fixture(scope="module")
def model():
    return tiny_model("gap_fc")


@pytest.fixture(scope="module")
def index(tiny_synthetic, model, tmp_path_factory):
    built, _, _ = build_index(tmp_path_factory.mktemp("index"), model, tiny_synthetic.items, tiny_synthetic.root)
    return built


def _input(model, path):
    return model.preprocessing(load_image(path).pixels).unsqueeze(0)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_scores_from_the_index_equal_direct_computations_with_the_model(tiny_synthetic, index, model):
    query_item = tiny_synthetic.items[0]
    box = Region.box(*query_item.box)
    queries = [RegionQuery("box", query_item.path, box), RegionQuery("point", query_item.path, Region.point(40.5, 17))]
    rows, errors = rank_queries(model, index, queries, ALL, top_k=len(index))
    assert {e.problem.split(" needs")[0] for e in errors} == {"method partial_box_mean", "method crop", "method mask"}
    pixels = load_image(query_item.path).pixels
    size = tuple(pixels.shape[1:])
    with torch.no_grad():
        crop_embedding = model(model.preprocessing(crop_pixels(pixels, box)).unsqueeze(0))[0]
        mask_embedding = model(model.preprocessing(mask_pixels(pixels, box, mean_colour(model))).unsqueeze(0))[0]
    checked = 0
    for row in rows:
        g = _input(model, row["gallery_image"])
        pair = explain_pair(model, _input(model, query_item.path), g)
        e_g = pair.embedding("retrieved")
        if row["method"] == "partial_centre":
            centre = [box.centre_xy] if row["query_id"] == "box" else [(40.5, 17)]
            expected = pair.partial_similarity("query", e_g, points_xy=centre, image_size=size)[0, 0, 0]
        elif row["method"] == "partial_box_mean":
            expected = pair.partial_similarity("query", e_g, boxes=[box.box_xyxy], image_size=size)[0, 0, 0]
        elif row["method"] == "overall":
            expected = pair.similarity[0]
        elif row["method"] == "crop":
            expected = _cosine(crop_embedding, e_g[0])
        else:
            expected = _cosine(mask_embedding, e_g[0])
        assert row["score"] == pytest.approx(float(expected), rel=1e-5, abs=1e-7), row
        checked += 1
    # box query: 5 methods, point query: 2 (box-only methods left out, with warnings); never the query's own image
    assert checked == 7 * (len(index) - 1)
    assert all(r["gallery_id"] != query_item.image_id for r in rows)
    table = frame("retrieval_rankings", rows)
    assert (table.groupby(["query_id", "method"])["rank"].max() == len(index) - 1).all()
    assert dict(zip(table["method"], table["region_feature"], strict=False)) == {
        "partial_centre": "centre", "partial_box_mean": "box_mean", "overall": "whole_image", "crop": "crop",
        "mask": "mask"}


def test_ranking_makes_no_model_call_per_gallery_image(tiny_synthetic, model, tmp_path):
    seen: list[int] = []
    handle = model.backbone.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    try:
        small, _, _ = build_index(tmp_path / "small", model, tiny_synthetic.items[:4], tiny_synthetic.root)
        large, _, _ = build_index(tmp_path / "large", model, tiny_synthetic.items, tiny_synthetic.root)
        assert sum(seen) == 4 + len(tiny_synthetic.items)  # building embeds each gallery image once
        queries = [RegionQuery(f"q{n}", item.path, Region.box(*item.box)) for n, item in
                   enumerate(tiny_synthetic.items[-2:])]
        counts = []
        for gallery in (small, large):
            seen.clear()
            rows, errors = rank_queries(model, gallery, queries, ALL, top_k=3)
            counts.append((len(seen), sum(seen)))
            assert rows and not errors
    finally:
        handle.remove()
    # per query: the image (every partial and the overall vector), its crop, its masked copy; one batched call
    assert counts == [(1, 6), (1, 6)]


def _grid_images(folder, count, seed):
    """Images of 48x64 pixels: two pixels per network input pixel, so 8 per feature cell (6x8 grid)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        pixels = (rng.random((12, 16, 3)) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)
        Image.fromarray(pixels).save(folder / f"{n}.png")
        paths.append(str(folder / f"{n}.png"))
    return paths


@pytest.mark.parametrize("head", HEAD_KINDS)
def test_whole_image_box_mean_ranks_by_the_embedding_minus_its_bias(head, tmp_path):
    """With uniform sampling weights f_box = (E_q - B_q)/(hw): exact for every head. Without a bias (gap, gmp)
    that is the overall ranking; with one it is the ranking by E_q - B_q."""
    from eml_core.datasets import Item

    model = tiny_model(head)
    paths = _grid_images(tmp_path / "gallery", 8, seed=1)
    items = [Item(str(n), p, p, 1, "test", None, (48, 64)) for n, p in enumerate(paths)]
    index, _, _ = build_index(tmp_path / "index", model, items, tmp_path)
    query_path = _grid_images(tmp_path / "query", 1, seed=2)[0]
    vectors, errors = query_vectors(model, [RegionQuery("q", query_path, Region.box(0, 0, 64, 48))],
                                    ("partial_box_mean", "overall"))
    assert not errors
    with torch.no_grad():
        pe = position_embeddings(model.head, model.features(_input(model, query_path)))
    e_q, b_q = pe.embedding[0], pe.bias[0]
    hw = pe.features.shape[1]
    box_mean = torch.from_numpy(vectors[0].vectors["partial_box_mean"])
    torch.testing.assert_close(box_mean * e_q.norm(), (e_q - b_q) / hw, rtol=1e-4, atol=1e-6)
    search = index.searcher("cpu")
    box_order = search.rank(box_mean)[1][0]
    assert box_order.tolist() == search.rank(e_q - b_q)[1][0].tolist()
    overall_scores, overall_order = search.rank(vectors[0].vectors["overall"])
    if head in ("gap", "gmp"):
        assert float(b_q.abs().max()) == 0.0
        assert box_order.tolist() == overall_order[0].tolist()
        np.testing.assert_allclose(search.rank(box_mean)[0][0], overall_scores[0] / hw, rtol=1e-5, atol=1e-7)
    else:
        assert float(b_q.abs().max()) > 0  # a bias: the box mean ranks by E_q - B_q, not by E_q


def test_gap_fc_without_bias_reproduces_the_overall_ranking(tmp_path):
    from eml_core.datasets import Item

    model = tiny_model("gap_fc")
    with torch.no_grad():
        model.head[-1].bias.zero_()
    paths = _grid_images(tmp_path / "gallery", 10, seed=3)
    index, _, _ = build_index(tmp_path / "index", model, [Item(str(n), p, p, 1, "test", None, (48, 64))
                                                          for n, p in enumerate(paths)], tmp_path)
    query = RegionQuery("q", _grid_images(tmp_path / "query", 1, seed=4)[0], Region.box(0, 0, 64, 48))
    rows, _ = rank_queries(model, index, [query], ("partial_box_mean", "overall"), top_k=10)
    by_method = {m: [r["gallery_id"] for r in rows if r["method"] == m] for m in ("partial_box_mean", "overall")}
    assert by_method["partial_box_mean"] == by_method["overall"] and len(by_method["overall"]) == 10


def test_crop_mask_and_mean_colour():
    pixels = torch.arange(3 * 6 * 8, dtype=torch.float32).view(3, 6, 8) / 144
    region = Region.box(1.5, 2, 5, 4.4)
    crop = crop_pixels(pixels, region)
    torch.testing.assert_close(crop, pixels[:, 2:5, 1:5])  # every pixel the box touches
    fill = torch.tensor([0.1, 0.2, 0.3])
    masked = mask_pixels(pixels, region, fill)
    # kept: pixels whose centres lie in the box (x centres 2.5..4.5 -> columns 2-4; y 2.5, 3.5 -> rows 2-3)
    torch.testing.assert_close(masked[:, 2:4, 2:5], pixels[:, 2:4, 2:5])
    assert torch.all(masked[:, :2] == fill.view(3, 1, 1)) and torch.all(masked[:, :, 5:] == fill.view(3, 1, 1))
    model = tiny_model("gap_fc")
    grey = mean_colour(model).view(3, 1, 1).expand(3, 24, 32)
    assert float(model.preprocessing(grey).abs().max()) < 1e-6  # the mean colour carries no signal


def test_point_specific_maps_on_retrieved_images(tiny_synthetic, index, model):
    item = tiny_synthetic.items[1]
    query = RegionQuery("q", item.path, Region.box(*item.box))
    rows, _ = rank_queries(model, index, [query], ("partial_centre",), top_k=3)
    shown = [r["gallery_image"] for r in rows]
    maps = region_point_specific_maps(model, query, shown)
    size = load_image(item.path).size
    for row, retrieved in zip(rows, maps, strict=False):
        pair = explain_pair(model, _input(model, item.path), _input(model, retrieved.image))
        expected = pair.point_specific("query", [query.region.centre_xy], image_size=size)[0, 0]
        torch.testing.assert_close(retrieved.raw_map, expected, rtol=1e-5, atol=1e-8)
        # completeness: the map plus the retrieved image's bias term is the partial similarity the ranking used
        assert float(retrieved.raw_map.sum()) + retrieved.bias_term == pytest.approx(retrieved.score, rel=1e-5)
        assert retrieved.score == pytest.approx(row["score"], rel=1e-5)
    box_maps = region_point_specific_maps(model, query, shown[:1], region_feature="box_mean")
    assert box_maps[0].raw_map.shape == maps[0].raw_map.shape


def test_bad_queries_are_error_rows_in_a_shard_and_errors_alone(tiny_synthetic, index, model, tmp_path):
    item = tiny_synthetic.items[0]
    height, width = item.size
    cases = {
        "missing": RegionQuery("missing", str(tmp_path / "nope.png"), Region.point(1, 1)),
        "outside": RegionQuery("outside", item.path, Region.box(0, 0, width + 50, 10)),
        "point outside": RegionQuery("point outside", item.path, Region.point(width, 3)),
        "empty": RegionQuery("empty", item.path, Region.box(10, 10, 10, 30)),
        "nan": RegionQuery("nan", item.path, Region.point(float("nan"), 3)),
    }
    good = RegionQuery("good", item.path, Region.box(*item.box))
    rows, errors = rank_queries(model, index, [*cases.values(), good], ALL, top_k=2)
    assert {r["query_id"] for r in rows} == {"good"} and len(rows) == 10
    problems = {e.item: e.problem for e in errors}
    assert "file does not exist" in problems["missing"]
    assert "is not inside the" in problems["outside"] and f"{width}x{height}" in problems["outside"]
    assert "outside the" in problems["point outside"]
    assert "is empty" in problems["empty"]
    assert "non-finite" in problems["nan"]
    for case in cases:
        record("rank_queries", f"query: {case}", "errors_row")
    with pytest.raises(ImageError, match="does not exist"):
        region_point_specific_maps(model, cases["missing"], [item.path])
    with pytest.raises(ArgumentError, match="is empty"):
        region_point_specific_maps(model, cases["empty"], [item.path])
    with pytest.raises(ArgumentError, match="unknown method"):
        rank_queries(model, index, [good], ("partial_centre", "grad_cam"))
    with pytest.raises(IndexModelMismatchError):
        rank_queries(tiny_model("gap_fc", seed=3), index, [good])
    for case in ("missing query file", "empty region", "unknown method", "another model"):
        record("region retrieval (single query)", case, "clean_error")


def test_excluded_ids_and_dot_similarity(tiny_synthetic, model, tmp_path):
    items = tiny_synthetic.items
    index, _, _ = build_index(tmp_path / "dot", model, items, tiny_synthetic.root, similarity="dot")
    query = RegionQuery("q", items[0].path, Region.point(30, 30), exclude_gallery_ids=(items[1].image_id,))
    rows, _ = rank_queries(model, index, [query], ("partial_centre", "overall"), top_k=len(items))
    assert {r["gallery_id"] for r in rows}.isdisjoint({items[0].image_id, items[1].image_id})
    overall = {r["gallery_id"]: r["score"] for r in rows if r["method"] == "overall"}
    with torch.no_grad():
        e_q = model(_input(model, items[0].path))[0]
        e_g = model(_input(model, items[5].path))[0]
    assert overall[items[5].image_id] == pytest.approx(float(e_q @ e_g), rel=1e-5)  # no normalisation


def test_montage_layout_and_stimuli_without_labels(tiny_synthetic, index, model):
    item = tiny_synthetic.items[0]
    box = Region.box(*item.box)
    rows, _ = rank_queries(model, index, [RegionQuery("q", item.path, box)], ("partial_centre", "overall"), top_k=3)
    table = frame("retrieval_rankings", rows)
    lines = [(m, list(table[table["method"] == m]["gallery_image"])) for m in ("partial_centre", "overall")]
    labelled = montage(item.path, box, lines, tile=64)
    stimulus = montage(item.path, box, lines, tile=64, show_labels=False)
    assert labelled.shape[0] == stimulus.shape[0] == 2 * 64 + 6
    assert labelled.shape[1] - stimulus.shape[1] == LABEL_WIDTH
    decoded = cv2.imdecode(np.frombuffer(png_bytes(stimulus), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(decoded, stimulus)
    # the region is drawn in red on the query tile, at the box's place
    scale = 64 / item.size[0]
    x0, y0 = int(item.box[0] * scale), int(item.box[1] * scale)
    patch = stimulus[max(0, y0 - 1):y0 + 2, max(0, x0 - 1):x0 + 2].reshape(-1, 3)
    assert any(p[0] > 180 and p[1] < 120 and p[2] < 120 for p in patch)
    point = montage(item.path, Region.point(20, 20), lines[:1], tile=64, show_labels=False)
    assert point.shape[0] == 64


def test_rankings_table_is_what_retrieval_studies_read():
    from amt.build import RANKINGS_COLUMNS

    assert set(RANKINGS_COLUMNS) <= set(SCHEMAS["retrieval_rankings"].names)
    assert isinstance(GalleryIndex, type)


@pytest.mark.slow
def test_the_documented_example_runs(monkeypatch, tmp_path):
    """The Python example of docs/retrieval.md, run in a scratch folder (the sample data's location is the
    only thing substituted, for checkouts whose ../shared lives elsewhere)."""
    import re
    from pathlib import Path

    from tests.conftest import SHARED_DATA, shared_data

    shared_data("market1501")
    repository = Path(__file__).resolve().parents[2]
    text = (repository / "docs" / "retrieval.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1).replace("../shared/data", str(SHARED_DATA))
    monkeypatch.chdir(tmp_path)  # the example's relative runs/ folder lands here, not in the checkout
    namespace: dict = {}
    exec(compile(code, "docs/retrieval.md", "exec"), namespace)
    assert namespace["added"] == 32 and not namespace["errors"]
    assert len(namespace["rankings"]) == 5 * 5 and len(namespace["maps"]) == 5
    assert cv2.imdecode(np.frombuffer(namespace["png"], np.uint8), cv2.IMREAD_COLOR) is not None
    assert namespace["heat"].shape == (128, 64) and namespace["heat"].max() <= 1
