"""Decomposition of a pair: golden values, completeness, point-specific maps, batching, degenerate pairs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from eml_core import HEAD_KINDS, ArgumentError, EmbeddingModel, build_head, explain_pair, partial_similarity
from eml_core.sampling import box_weights, point_weights
from tests.conftest import tiny_model

# Identity backbone: the "images" are the feature maps themselves (C=2, 1x2 grid).
A_Q = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])
A_R = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]])


def _identity_model(head_kind: str = "gap") -> EmbeddingModel:
    dim = None if head_kind in ("gap", "gmp", "gap_bn") else 2
    return EmbeddingModel(nn.Identity(), build_head(head_kind, 2, dim)).eval()


def test_golden_values_dot():
    ex = explain_pair(_identity_model(), A_Q, A_R, similarity="dot")
    # E_q = (2, 1), E_r = (1, 1); F_q = (0.5, 1), (1.5, 0); F_r = (0, 0.5), (1, 0.5)
    assert ex.similarity.item() == pytest.approx(3.0)
    assert torch.allclose(ex.point_to_point[0, 0, :, 0, :], torch.tensor([[0.5, 1.0], [0.0, 1.5]]))
    assert torch.allclose(ex.overall("query")[0], torch.tensor([[1.5, 1.5]]))
    assert torch.allclose(ex.overall("retrieved")[0], torch.tensor([[0.5, 2.5]]))
    assert ex.completeness_residual.abs().item() < 1e-12


def test_golden_values_cosine_divide_by_the_norms():
    ex = explain_pair(_identity_model(), A_Q, A_R, similarity="cosine")
    z = math.sqrt(5) * math.sqrt(2)
    assert ex.similarity.item() == pytest.approx(3.0 / z)
    assert torch.allclose(ex.overall("query")[0], torch.tensor([[1.5, 1.5]]) / z)
    assert torch.allclose(ex.point_to_point.sum(), torch.tensor(3.0 / z))


def test_bias_variant_uses_the_full_embedding():
    model = _identity_model("gap_fc")
    with torch.no_grad():
        model.head[2].weight.copy_(torch.eye(2)), model.head[2].bias.copy_(torch.tensor([1.0, -2.0]))
    ex = explain_pair(model, A_Q, A_R, similarity="dot")
    # E_r = (1, 1) + (1, -2) = (2, -1); O_q[p] = F_q_p . E_r
    assert torch.allclose(ex.overall("query", bias=True)[0], torch.tensor([[0.0, 3.0]]))
    assert torch.allclose(ex.overall("query", bias=False)[0], torch.tensor([[1.5, 1.5]]))


def _pair(seed: int, q_size, r_size, batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *q_size, generator=g), torch.randn(batch, 3, *r_size, generator=g)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_completeness_for_every_head_with_unequal_sizes(kind, similarity):
    for seed, q_size, r_size in ((0, (24, 32), (36, 20)), (1, (17, 45), (40, 40))):
        query_model = tiny_model(kind, q_size, seed=seed)
        # a flatten head is tied to its input size: the retrieved side gets its own branch
        retrieved_model = tiny_model(kind, r_size, seed=seed + 10) if kind == "flatten_fc_bn" else None
        q, r = _pair(seed, q_size, r_size)
        ex = explain_pair(query_model, q, r, similarity=similarity, retrieved_model=retrieved_model)
        relative = ex.completeness_residual.abs() / ex.similarity.abs().clamp_min(1e-3)
        assert relative.max() < 1e-5, (kind, similarity, relative)
        # the similarity is the model's own
        e_q = query_model(q)
        e_r = (retrieved_model or query_model)(r)
        expected = (e_q * e_r).sum(1)
        if similarity == "cosine":
            expected = torch.nn.functional.cosine_similarity(e_q, e_r)
        assert torch.allclose(ex.similarity, expected, atol=1e-5, rtol=1e-4)


def test_autograd_and_closed_form_explanations_agree():
    model = tiny_model("gap_fc_relu_fc")
    q, r = _pair(2, (24, 32), (28, 28))
    closed = explain_pair(model, q, r, method="closed_form")
    taylor = explain_pair(model, q, r, method="autograd")
    assert torch.allclose(closed.point_to_point, taylor.point_to_point, atol=1e-6)
    assert torch.allclose(closed.overall("retrieved", bias=True), taylor.overall("retrieved", bias=True), atol=1e-6)


def test_overall_maps_are_marginals_of_point_to_point():
    model = tiny_model("gmp_fc")
    ex = explain_pair(model, *_pair(3, (24, 32), (20, 36)))
    p = ex.point_to_point
    assert torch.allclose(ex.overall("query"), p.sum(dim=(3, 4)), atol=1e-6)
    assert torch.allclose(ex.overall("retrieved"), p.sum(dim=(1, 2)), atol=1e-6)


def test_point_specific_maps_summed_over_all_query_positions_give_the_overall_map():
    model = tiny_model("gap_fc")
    ex = explain_pair(model, *_pair(4, (24, 32), (28, 20)))
    h, w = ex.feature_size("query")
    height, width = ex.input_sizes["query"]
    # the pixel whose feature coordinate is exactly position (i, j): u = (j + 0.5) * W / w - 0.5
    points = [((j + 0.5) * width / w - 0.5, (i + 0.5) * height / h - 0.5) for i in range(h) for j in range(w)]
    maps = ex.point_specific("query", points)
    assert maps.shape == (3, h * w, *ex.feature_size("retrieved"))
    assert torch.allclose(maps.sum(1), ex.overall("retrieved"), atol=1e-6)
    # and each one is a slice of the point-to-point tensor
    assert torch.allclose(maps.view(3, h, w, *ex.feature_size("retrieved")), ex.point_to_point, atol=1e-6)


def test_point_specific_interpolates_between_positions_and_clamps_at_edges():
    ex = explain_pair(_identity_model(), A_Q, A_R, similarity="dot")
    # image of 1x4 pixels over the 1x2 grid: pixel 1.5 lies halfway between the two positions
    half = ex.point_specific("query", [(1.5, 0.0)], image_size=(1, 4))[0, 0]
    assert torch.allclose(half, 0.5 * (ex.point_to_point[0, 0, 0] + ex.point_to_point[0, 0, 1]))
    edge = ex.point_specific("query", [(0.0, 0.0)], image_size=(1, 4))[0, 0]
    assert torch.allclose(edge, ex.point_to_point[0, 0, 0])  # clamped: the left-most position only
    reverse = ex.point_specific("retrieved", [(3.0, 0.0)], image_size=(1, 4))[0, 0]
    assert torch.allclose(reverse, ex.point_to_point[0, :, :, 0, 1])


def test_points_outside_the_image_are_refused_with_the_argument_named():
    ex = explain_pair(_identity_model(), A_Q, A_R)
    with pytest.raises(ArgumentError, match=r"query points_xy.*\(4, 0\) is outside the 4x1 image"):
        ex.point_specific("query", [(4.0, 0.0)], image_size=(1, 4))
    with pytest.raises(ArgumentError, match="retrieved boxes"):
        ex.partial_embedding("retrieved", boxes=[(0, 0, 9, 1)], image_size=(1, 4))


def test_box_weights_average_pixel_samples():
    # whole image -> mean of bilinear samples at every pixel centre
    weights = box_weights([(0, 0, 8, 4)], image_size=(4, 8), feature_size=(2, 2))
    brute = point_weights([(u, v) for v in range(4) for u in range(8)], (4, 8), (2, 2)).mean(0)
    assert torch.allclose(weights[0], brute)
    assert weights.sum().item() == pytest.approx(1.0)


def test_partial_similarity_of_the_whole_image_is_the_overall_similarity_minus_bias():
    model = tiny_model("gap")  # GAP, no bias: whole-image region mean over positions = E exactly
    q, r = _pair(5, (32, 32), (32, 32), batch=2)
    ex = explain_pair(model, q, r)
    h, w = ex.feature_size("query")
    gallery = model(r)  # stored gallery embeddings, reused
    centres = [((j + 0.5) * 32 / w - 0.5, (i + 0.5) * 32 / h - 0.5) for i in range(h) for j in range(w)]
    f = ex.partial_embedding("query", points_xy=centres).mean(1, keepdim=True) * (h * w)
    scores = partial_similarity(f, ex.embedding("query"), gallery)
    assert torch.allclose(scores[:, 0, :].diagonal(), ex.similarity, atol=1e-6)
    via_method = ex.partial_similarity("query", gallery, boxes=[(0, 0, 32, 32)])
    assert via_method.shape == (2, 1, 2)


def test_batch_equals_per_pair():
    model = tiny_model("flatten_fc_bn", (24, 32))
    q, r = _pair(6, (24, 32), (24, 32), batch=4)
    batched = explain_pair(model, q, r)
    for i in range(4):
        single = explain_pair(model, q[i], r[i])
        assert torch.allclose(batched.point_to_point[i], single.point_to_point[0], atol=1e-6)
        assert torch.allclose(batched.overall("query", True)[i], single.overall("query", True)[0], atol=1e-6)
        assert torch.allclose(batched.similarity[i], single.similarity[0], atol=1e-6)


def test_zero_embedding_gives_a_flagged_zero_result_not_nan():
    model = _identity_model("gap")
    zero = torch.zeros_like(A_R)
    with pytest.warns(UserWarning, match="zero-norm"):
        ex = explain_pair(model, torch.cat([A_Q, A_Q]), torch.cat([A_R, zero]))
    assert ex.degenerate.tolist() == [False, True]
    assert ex.similarity[1] == 0 and torch.isfinite(ex.similarity).all()
    for maps in (ex.point_to_point, ex.overall("query"), ex.overall("retrieved", True), ex.grad_cam()["query"]):
        assert torch.isfinite(maps).all()
        assert (maps[1] == 0).all()
    assert torch.isfinite(ex.completeness_residual).all()


def test_model_mode_is_restored_and_explanation_uses_eval_mode():
    model = tiny_model("gap_bn").train()
    q, r = _pair(7, (24, 32), (24, 32))
    ex = explain_pair(model, q, r)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert torch.allclose(ex.embedding("query"), model(q), atol=1e-6)


def test_bad_arguments_are_named():
    model = _identity_model()
    with pytest.raises(ArgumentError, match="similarity"):
        explain_pair(model, A_Q, A_R, similarity="euclid")
    with pytest.raises(ArgumentError, match="retrieved: batch of 2"):
        explain_pair(model, A_Q, torch.cat([A_R, A_R]))
    with pytest.raises(ArgumentError, match="query: contains NaN"):
        explain_pair(model, A_Q * float("nan"), A_R)
    with pytest.raises(ArgumentError, match="side"):
        explain_pair(model, A_Q, A_R).overall("left")


def _pairwise_by_loop(model: EmbeddingModel, q: torch.Tensor, r: torch.Tensor):
    """The authors' "Decomposition" written out as their demo does, for a GMP + Linear head: the max mask per
    channel, F_p = W (A_p masked), P[p, x] = F^q_p . F^r_x / (|E_q| |E_r|) pair by pair, P / max P, ReLU, sum."""
    linear = next(m for m in model.head.modules() if isinstance(m, nn.Linear))

    def position_features(x):
        with torch.no_grad():
            a = model.backbone(x)[0]                                   # (C, h, w)
        flat = a.flatten(1)                                             # (C, hw)
        masked = torch.zeros_like(flat)
        for k in range(flat.shape[0]):
            p = int(torch.argmax(flat[k]))
            masked[k, p] = flat[k, p]
        return [linear.weight.detach() @ masked[:, p] for p in range(flat.shape[1])], a.shape[1:]

    fq, q_size = position_features(q)
    fr, r_size = position_features(r)
    with torch.no_grad():
        z = float(model(q).norm() * model(r).norm())
    pairs = [[float(fq[p] @ fr[x]) / z for x in range(len(fr))] for p in range(len(fq))]
    peak = max(max(row) for row in pairs)
    o_q = [sum(max(v / peak, 0.0) for v in pairs[p]) for p in range(len(fq))]
    o_r = [sum(max(pairs[p][x] / peak, 0.0) for p in range(len(fq))) for x in range(len(fr))]
    return pairs, torch.tensor(o_q).view(q_size), torch.tensor(o_r).view(r_size)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_relu_decomposition_equals_a_loop_over_pairs(seed):
    from eml_core.methods import method_maps

    model = tiny_model("gmp_fc", (24, 32), seed=seed)
    q, r = (x[:1] for x in _pair(seed, (24, 32), (24, 32), batch=1))
    pairs, loop_q, loop_r = _pairwise_by_loop(model, q, r)
    assert min(min(row) for row in pairs) < 0 < max(max(row) for row in pairs)  # negative pairs are present
    maps = method_maps(explain_pair(model, q, r), ("decomposition_pairwise",))["decomposition_pairwise"]
    assert torch.allclose(maps["query"][0], loop_q, rtol=1e-5, atol=1e-6)
    assert torch.allclose(maps["retrieved"][0], loop_r, rtol=1e-5, atol=1e-6)


def test_pairwise_relu_differs_from_relu_after_the_sum():
    """F_q = (1, 0), (0, 1); F_r = (1, 0), (-2, 1) (identity backbone, GAP, dot): P = [[1, -2], [0, 1]].
    ReLU per pair keeps the 1 of row 0 (map (1, 1)); summing first gives -1 there, rectified to 0."""
    model = _identity_model("gap")
    a_q = torch.tensor([[[[2.0, 0.0]], [[0.0, 2.0]]]])
    a_r = torch.tensor([[[[2.0, -4.0]], [[0.0, 2.0]]]])
    ex = explain_pair(model, a_q, a_r, similarity="dot")
    assert torch.allclose(ex.point_to_point[0, 0, :, 0, :], torch.tensor([[1.0, -2.0], [0.0, 1.0]]))
    assert torch.allclose(ex.overall_pairwise("query")[0], torch.tensor([[1.0, 1.0]]))
    assert torch.allclose(ex.overall_pairwise("retrieved")[0], torch.tensor([[1.0, 1.0]]))
    assert torch.allclose(ex.overall("query")[0].clamp_min(0), torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(ex.overall("retrieved")[0].clamp_min(0), torch.tensor([[1.0, 0.0]]))
    # nothing positive: an all-zero map (flagged at presentation), never signs flipped by a negative maximum
    ex = explain_pair(model, a_q, -a_q.abs(), similarity="dot")
    assert ex.point_to_point.max() <= 0 and not ex.overall_pairwise("query").any()
