r"""Grad-CAM for metric learning, the paper's baseline (Section V, Appendix A).

For a similarity S of a pair and one side's feature map A (C x h x w):

.. math:: \alpha_k = \frac{1}{hw} \sum_p \frac{\partial S}{\partial A_{k,p}}, \qquad
          \mathrm{map}[p] = \sum_k \alpha_k A_{k,p}.

"Grad-CAM" uses the cosine similarity, "Grad-CAM (no norm)" the dot product
E_q . E_r. With a GAP head, Grad-CAM (no norm) equals Decomposition+Bias
(alpha = W^T E_r / hw, so map[p] = (W A_p / hw) . E_r = F_p . E_r); with GMP or
flatten heads the two differ.

Gradients are taken with ``torch.autograd.grad`` with respect to detached copies
of the feature maps only: one backward pass through the heads serves both sides
and the whole batch, nothing accumulates into parameters' ``.grad``, no hook is
registered, and the modules' train/eval flags are restored.
"""

from __future__ import annotations

import torch
from torch import nn

from eml_core.errors import ArgumentError
from eml_core.feature_maps import as_image_batch, compute_feature_map, model_device
from eml_core.models import EmbeddingModel, inference_mode_of


def grad_cam_from_features(head_q: nn.Module, head_r: nn.Module, map_q: torch.Tensor, map_r: torch.Tensor,
                           similarity: str = "cosine") -> dict[str, torch.Tensor]:
    """Raw signed Grad-CAM maps ``{"query": (B, hq, wq), "retrieved": (B, hr, wr)}``.

    Pairs with a zero-norm embedding (cosine undefined) get all-zero maps.
    """
    if similarity not in ("cosine", "dot"):
        raise ArgumentError("similarity", f"expected 'cosine' or 'dot', got {similarity!r}")
    # clones: the backbone's maps are inference tensors (torch.inference_mode), which autograd cannot record
    a_q = map_q.detach().clone().requires_grad_(True)
    a_r = map_r.detach().clone().requires_grad_(True)
    with inference_mode_of(head_q, head_r), torch.enable_grad():
        e_q, e_r = head_q(a_q), head_r(a_r)
        score = (e_q * e_r).sum(1)
        if similarity == "cosine":
            norms = e_q.norm(dim=1) * e_r.norm(dim=1)
            valid = norms > 0
            score = torch.where(valid, score / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(score))
        grad_q, grad_r = torch.autograd.grad(score.sum(), (a_q, a_r), allow_unused=True)
    maps = {}
    for side, feature_map, grad in (("query", map_q, grad_q), ("retrieved", map_r, grad_r)):
        if grad is None:
            grad = torch.zeros_like(feature_map)
        weights = grad.mean(dim=(2, 3), keepdim=True)  # alpha_k
        maps[side] = (weights * feature_map.detach()).sum(1)
    return maps


def grad_cam(model: EmbeddingModel, query: torch.Tensor, retrieved: torch.Tensor, similarity: str = "cosine",
             retrieved_model: EmbeddingModel | None = None) -> dict[str, torch.Tensor]:
    """Grad-CAM of both sides of B pairs of preprocessed images (``similarity="dot"`` for no norm)."""
    retrieved_model = retrieved_model or model
    query = as_image_batch(query, "query").to(model_device(model))
    retrieved = as_image_batch(retrieved, "retrieved").to(model_device(retrieved_model))
    with inference_mode_of(model, retrieved_model):
        map_q = compute_feature_map(model, query, "query")
        map_r = compute_feature_map(retrieved_model, retrieved, "retrieved")
    return grad_cam_from_features(model.head, retrieved_model.head, map_q, map_r, similarity)
