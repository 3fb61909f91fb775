"""No repeated work: the feature maps the embedding pass computed explain the pairs exactly as a second backbone
pass would; the backbone runs under inference mode, optionally autocast; batch sizes follow the device."""

from __future__ import annotations

import pytest
import torch

from eml_core.batches import default_batch_size
from eml_core.decomposition import explain_from_feature_maps, explain_pair
from eml_core.errors import ArgumentError
from eml_core.feature_maps import backbone_precision, compute_feature_map
from eml_core.localization import localize_pairs
from eml_core.methods import DEFAULT_METHODS, method_maps
from eml_core.retrieval import embed_items, same_class_pairs
from tests.conftest import tiny_model

THRESHOLDS = (0.1, 0.3, 0.5, 0.7)


@pytest.fixture(scope="module")
def model():
    return tiny_model("gap_fc")


@pytest.fixture(scope="module")
def kept(model, tiny_synthetic):
    """Embeddings and kept feature maps of the tiny dataset, and its pairs."""
    maps: list[torch.Tensor] = []
    items, embeddings, errors = embed_items(model, tiny_synthetic.items, batch_size=5, feature_maps=maps)
    pairs, _ = same_class_pairs(items, embeddings)
    return items, embeddings, maps, pairs


def test_embed_items_keeps_the_map_each_embedding_came_from(model, kept):
    items, embeddings, maps, _ = kept
    assert len(maps) == len(items) == len(embeddings) == 16  # every image of the tiny dataset
    batch = torch.stack([model.preprocessing(torch.rand(3, 8, 8)) for _ in range(2)])
    with torch.inference_mode():
        assert torch.equal(model.head(compute_feature_map(model, batch, "x")), model(batch))
    for feature_map, embedding in zip(maps, embeddings, strict=True):
        assert feature_map.shape == (6, 6, 8) and feature_map.dtype == torch.float32
        assert torch.allclose(model.head(feature_map.unsqueeze(0))[0], embedding, atol=1e-6)


def test_explaining_from_feature_maps_equals_explaining_the_images(model):
    torch.manual_seed(0)
    q, r = torch.randn(3, 3, 24, 32), torch.randn(3, 3, 24, 32)
    from_images = explain_pair(model, q, r)
    from_maps = explain_from_feature_maps(model, model.features(q), model.features(r))
    assert from_maps.input_sizes == from_images.input_sizes == {"query": (24, 32), "retrieved": (24, 32)}
    assert torch.equal(from_maps.similarity, from_images.similarity)
    for method in DEFAULT_METHODS:
        for side in ("query", "retrieved"):
            assert torch.equal(method_maps(from_maps, [method])[method][side],
                               method_maps(from_images, [method])[method][side]), (method, side)
    assert from_maps.completeness_residual.abs().max() < 1e-6


def test_float16_maps_are_widened_and_stay_close(model):
    torch.manual_seed(1)
    q, r = model.features(torch.randn(2, 3, 24, 32)), model.features(torch.randn(2, 3, 24, 32))
    exact = method_maps(explain_from_feature_maps(model, q, r))
    half = method_maps(explain_from_feature_maps(model, q.half(), r.half()))
    for method in DEFAULT_METHODS:
        got, want = half[method]["query"], exact[method]["query"]
        assert got.dtype == torch.float32
        assert (got - want).abs().max() <= 2e-3 * want.abs().max(), method  # float16 keeps ~3 decimal digits


@pytest.mark.parametrize("bad, words", [
    (torch.zeros(6, 6, 8), "expected a (B, C, h, w) feature map"),
    (torch.zeros(1, 6, 0, 8), "expected a (B, C, h, w) feature map"),
    (torch.zeros(1, 6, 6, 8, dtype=torch.int64), "expected floating-point values"),
])
def test_bad_feature_maps_are_refused(model, bad, words):
    with pytest.raises(ArgumentError, match="map_q") as refused:
        explain_from_feature_maps(model, bad, torch.zeros(1, 6, 6, 8))
    assert words in str(refused.value)


def test_localizing_from_kept_maps_gives_the_rows_of_decoding_again(model, kept):
    _, _, maps, pairs = kept
    by_id = {item.image_id: m for item, m in zip(kept[0], maps, strict=True)}
    again, errors_again = localize_pairs(model, pairs, thresholds=THRESHOLDS, batch_size=4)
    reused, errors_reused = localize_pairs(model, pairs, thresholds=THRESHOLDS, batch_size=4, feature_maps=by_id)
    assert errors_again == errors_reused == []
    assert len(reused) == 16 * len(DEFAULT_METHODS) * len(THRESHOLDS) and reused == again  # one pair per image

    half = {image_id: m.half() for image_id, m in by_id.items()}
    from_half, _ = localize_pairs(model, pairs, thresholds=THRESHOLDS, batch_size=4, feature_maps=half)
    assert [(r["pair_id"], r["method"], r["threshold"]) for r in from_half] == \
           [(r["pair_id"], r["method"], r["threshold"]) for r in again]


def test_a_pair_without_a_kept_map_goes_to_errors(model, kept):
    items, _, maps, pairs = kept
    by_id = {item.image_id: m for item, m in zip(items, maps, strict=True)}
    missing = pairs[0].retrieved.image_id
    del by_id[missing]
    rows, errors = localize_pairs(model, pairs, thresholds=THRESHOLDS, feature_maps=by_id)
    left_out = {e.item for e in errors}
    assert left_out == {p.pair_id for p in pairs if missing in (p.query.image_id, p.retrieved.image_id)}
    assert all(f"no feature map for image {missing}" in e.problem for e in errors)
    assert {r["pair_id"] for r in rows} == {p.pair_id for p in pairs} - left_out


def test_backbone_runs_in_inference_mode_and_grad_cam_still_differentiates_the_heads(model):
    images = torch.randn(2, 3, 24, 32)
    feature_map = compute_feature_map(model, images, "x")
    assert feature_map.is_inference() and not feature_map.requires_grad
    explanation = explain_pair(model, images, images.flip(-1))
    cams = explanation.grad_cam()  # autograd through the heads, on clones of the inference tensors
    assert cams["query"].shape == (2, 6, 8) and torch.isfinite(cams["query"]).all()
    assert not any(p.grad is not None for p in model.parameters())


def test_autocast_precision_changes_the_backbone_only(model):
    images = torch.randn(2, 3, 24, 32)
    exact = compute_feature_map(model, images, "x")
    assert torch.equal(compute_feature_map(model, images, "x", "float32"), exact)
    low = compute_feature_map(model, images, "x", "bfloat16")
    assert low.dtype == torch.float32  # widened back: heads and the decomposition stay float32
    assert (low - exact).abs().max() <= 0.05 * exact.abs().max()  # bfloat16 keeps ~2-3 decimal digits
    with pytest.raises(ArgumentError, match="precision"):
        backbone_precision("cpu", "float8")


def test_batch_size_follows_the_device(monkeypatch):
    assert default_batch_size("cpu") == 32

    class Properties:
        def __init__(self, gib):
            self.total_memory = gib * 2**30

    for gib, input_size, expected in ((8, (224, 224), 64), (80, (224, 224), 512), (1, (224, 224), 16),
                                      (16, (448, 448), 32), (16, None, 128)):
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device, g=gib: Properties(g))
        assert default_batch_size("cuda:0", input_size) == expected, (gib, input_size)
