"""Grad-CAM for metric learning: paper Section V relations and an independent hook-based reference."""

from __future__ import annotations

import pytest
import torch

from eml_core import explain_pair, grad_cam
from tests.conftest import tiny_model


def _pair(seed: int, size=(24, 32), batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=g), torch.randn(batch, 3, *size, generator=g)


def _flat_unit(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    return flat / flat.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("kind", ["gap", "gap_fc", "gap_bn", "gap_fc_relu_fc"])
def test_gradcam_no_norm_is_proportional_to_decomposition_plus_bias_for_gap_heads(kind):
    model = tiny_model(kind)
    ex = explain_pair(model, *_pair(0), similarity="cosine")
    cams = ex.grad_cam(normalised=False)
    for side in ("query", "retrieved"):
        # exactly: Grad-CAM (no norm) = Z * Decomposition+Bias (cosine), for every pair
        expected = ex.overall(side, bias=True) * ex.normaliser.view(-1, 1, 1)
        assert torch.allclose(cams[side], expected, atol=1e-5, rtol=1e-4), side


@pytest.mark.parametrize("kind", ["gmp", "gmp_fc", "flatten_fc_bn"])
def test_gradcam_no_norm_differs_from_decomposition_for_gmp_and_flatten_heads(kind):
    model = tiny_model(kind)
    ex = explain_pair(model, *_pair(1), similarity="dot")
    cams = ex.grad_cam(normalised=False)
    for side in ("query", "retrieved"):
        agreement = (_flat_unit(cams[side]) * _flat_unit(ex.overall(side, bias=True))).sum(1)
        assert (agreement < 0.99).all(), (side, agreement)


def _hook_based_gradcam(model, q, r, similarity):
    """Reference: the textbook hook + retain_grad + backward through the whole model, one pair."""
    kept = {}
    handle = model.backbone.register_forward_hook(lambda m, i, o: kept.setdefault("maps", []).append(o))
    try:
        with torch.enable_grad():
            e_q, e_r = model(q.unsqueeze(0)), model(r.unsqueeze(0))
            for a in kept["maps"]:
                a.retain_grad()
            s = torch.nn.functional.cosine_similarity(e_q, e_r).sum() if similarity == "cosine" else (e_q * e_r).sum()
            s.backward()
    finally:
        handle.remove()
    maps = [(a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(1)[0].detach() for a in kept["maps"]]
    model.zero_grad(set_to_none=True)
    return maps


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_gradcam_equals_a_direct_hook_based_computation(similarity):
    model = tiny_model("gmp_fc")
    q, r = _pair(2)
    cams = grad_cam(model, q, r, similarity=similarity)
    for i in range(q.shape[0]):
        ref_q, ref_r = _hook_based_gradcam(model, q[i], r[i], similarity)
        assert torch.allclose(cams["query"][i], ref_q, atol=1e-6)
        assert torch.allclose(cams["retrieved"][i], ref_r, atol=1e-6)


def test_gradcam_leaves_the_model_exactly_as_found():
    model = tiny_model("gap_bn").train()
    model.head[2].weight.requires_grad_(False)  # a frozen parameter must stay frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [(m, m.training) for m in model.modules()]
    requires = [(p, p.requires_grad) for p in model.parameters()]
    grad_cam(model, *_pair(3))
    assert all(m.training == flag for m, flag in flags)
    assert all(p.requires_grad == flag for p, flag in requires)
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched


def test_batched_gradcam_equals_per_pair():
    model = tiny_model("gap_fc_relu_fc")
    q, r = _pair(4)
    batched = grad_cam(model, q, r)
    for i in range(3):
        single = grad_cam(model, q[i], r[i])
        assert torch.allclose(batched["query"][i], single["query"][0], atol=1e-6)
        assert torch.allclose(batched["retrieved"][i], single["retrieved"][0], atol=1e-6)
