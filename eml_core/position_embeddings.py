r"""Position embeddings: the embedding split into contributions of feature-map positions.

At a given input, a head E = g(A) built from GAP, GMP, Flatten, Linear,
BatchNorm (eval), 1x1 Conv, ReLU / LeakyReLU / PReLU, Dropout (eval) and
Identity is affine in the feature map A (C x h x w):

.. math::  E = \sum_p W_p A_p + B,

with W_p in R^{l x C}. The *equivalent feature* of position p is F_p = W_p A_p
(in R^l) and B collects every bias term. The forward pass fixes the
piecewise-linear choices: GMP keeps one argmax per channel (paper Eq. 7: a max
mask M turns GMP into masked GAP), ReLU keeps its mask, BatchNorm folds into a
per-channel scale and shift. :func:`position_embeddings` computes F and B

* in **closed form** for heads made of those layers (a few matmuls: the
  contributions of all positions are pushed through each layer at once, never
  forming the l x C matrices W_p), or
* by the **first-order Taylor expansion** at A (paper Eq. 6) for any other
  differentiable head: W_p = dE/dA_p, F_p = (dE/dA_p) A_p computed with
  forward-mode autodiff (one Jacobian-vector product per position), and
  B = E - sum_p F_p. A curved head is not affine, so this path also reports a
  *linearisation residual* (see :func:`linearisation_residual`).

Both give ``sum_p F_p + B == E`` to float precision.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from torch import nn

from eml_core.errors import ArgumentError, UnsupportedHeadError


@dataclass
class PositionEmbeddings:
    """Equivalent features ``F`` (B, h*w, l), bias ``B`` (B, l) and embedding ``E`` (B, l) of one side."""

    features: torch.Tensor
    bias: torch.Tensor
    embedding: torch.Tensor
    feature_size: tuple[int, int]
    method: str
    linearisation_residual: torch.Tensor

    @property
    def feature_grid(self) -> torch.Tensor:
        """F as ``(B, h, w, l)``."""
        batch, _, dim = self.features.shape
        return self.features.view(batch, *self.feature_size, dim)


def position_embeddings(head: nn.Module, feature_map: torch.Tensor, method: str = "auto") -> PositionEmbeddings:
    """Decompose ``head(feature_map)`` into per-position equivalent features and a bias.

    ``method``: ``"closed_form"`` (raises :class:`UnsupportedHeadError` for an
    unknown layer), ``"autograd"`` (Taylor expansion, any differentiable head),
    or ``"auto"`` (closed form where possible, else autograd). Run the head in
    eval mode (see :func:`eml_core.models.inference_mode_of`).
    """
    if feature_map.dim() != 4:
        raise ArgumentError("feature_map", f"expected (B, C, h, w), got shape {tuple(feature_map.shape)}")
    if method not in ("auto", "closed_form", "autograd"):
        raise ArgumentError("method", f"expected 'auto', 'closed_form' or 'autograd', got {method!r}")
    feature_map = feature_map.detach()
    if method in ("auto", "closed_form"):
        try:
            with torch.no_grad():
                return _closed_form(head, feature_map)
        except UnsupportedHeadError:
            if method == "closed_form":
                raise
    return _taylor(head, feature_map)


# ---------------------------------------------------------------------------------------------
# closed form


class _AffineState:
    """Contributions of every position, pushed through the head layer by layer.

    stages:
      * ``spatial``: ``x`` (B, C, h, w) holds each position's contribution at that
        position (position p only reaches position p); ``bias`` (B, C, h, w).
      * ``flat``: after Flatten of a spatial map: same tensors, flattened index c*hw + p.
      * ``vector``: ``x`` = F (B, N, d), ``bias`` (B, d).
    ``value`` is the real activation of the forward pass, which fixes masks.
    """

    def __init__(self, feature_map: torch.Tensor):
        self.stage = "spatial"
        self.x = feature_map
        self.bias = torch.zeros_like(feature_map)
        self.value = feature_map
        self.pooled_4d = False  # AdaptiveXxxPool2d output (B, C, 1, 1) before its Flatten


def _leaf_layers(head: nn.Module):
    if isinstance(head, nn.Sequential):
        for child in head:
            yield from _leaf_layers(child)
    else:
        yield head


def _closed_form(head: nn.Module, feature_map: torch.Tensor) -> PositionEmbeddings:
    state = _AffineState(feature_map)
    batch, _, h, w = feature_map.shape
    for layer in _leaf_layers(head):
        _push(layer, state)
    if state.stage != "vector":
        raise UnsupportedHeadError("head output is not a vector (no pooling, flatten or linear layer to end on)")
    embedding = state.value
    if embedding.dim() == 4:
        embedding = embedding.flatten(1)
    return PositionEmbeddings(
        features=state.x, bias=state.bias, embedding=embedding, feature_size=(h, w),
        method="closed_form",
        linearisation_residual=torch.zeros(batch, dtype=feature_map.dtype, device=feature_map.device),
    )


def _batchnorm_scale_shift(layer: nn.modules.batchnorm._BatchNorm):
    """Eval-mode BatchNorm as y = s * x + t."""
    if layer.training and layer.track_running_stats:
        raise UnsupportedHeadError("BatchNorm in training mode is not affine per sample; run the head in eval mode")
    if layer.running_var is None:
        raise UnsupportedHeadError("BatchNorm without running statistics normalises by batch statistics")
    scale = torch.rsqrt(layer.running_var + layer.eps)
    if layer.weight is not None:
        scale = scale * layer.weight
    assert layer.running_mean is not None  # checked by the caller: eval-mode BN with running statistics
    shift = -layer.running_mean * scale
    if layer.bias is not None:
        shift = shift + layer.bias
    return scale, shift


def _slopes(layer: nn.Module, pre_activation: torch.Tensor) -> torch.Tensor:
    """Per-element slope of a piecewise-linear activation at the forward pass's input."""
    positive = pre_activation > 0
    if isinstance(layer, nn.ReLU):
        return positive.to(pre_activation.dtype)
    if isinstance(layer, nn.LeakyReLU):
        negative = torch.full_like(pre_activation, layer.negative_slope)
        return torch.where(positive, torch.ones_like(pre_activation), negative)
    # PReLU: one slope or one per channel (dimension 1)
    assert isinstance(layer, nn.PReLU)
    weight = layer.weight
    shape = [1] * pre_activation.dim()
    if weight.numel() > 1:
        shape[1] = weight.numel()
    negative = weight.view(shape).expand_as(pre_activation)
    return torch.where(positive, torch.ones_like(pre_activation), negative)


def _push(layer: nn.Module, s: _AffineState) -> None:
    """Apply one layer to the real activation and to the decomposition alongside it."""
    if isinstance(layer, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)):
        if layer.training and not isinstance(layer, nn.Identity) and getattr(layer, "p", 0) > 0:
            raise UnsupportedHeadError("Dropout in training mode; run the head in eval mode")
        return
    output = layer(s.value)

    if isinstance(layer, (nn.ReLU, nn.LeakyReLU, nn.PReLU)):
        slope = _slopes(layer, s.value)
        if s.stage == "vector":
            slope = slope.flatten(1)  # a pooled (B, C, 1, 1) activation before its Flatten
            s.x = s.x * slope.unsqueeze(1)
        else:
            s.x = s.x * slope.view_as(s.x)
        s.bias = s.bias * slope.view_as(s.bias)

    elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale, shift = _batchnorm_scale_shift(layer)
        if s.stage == "spatial":
            if not isinstance(layer, nn.BatchNorm2d):
                raise UnsupportedHeadError("BatchNorm1d applied to a spatial feature map")
            s.x = s.x * scale.view(1, -1, 1, 1)
            s.bias = s.bias * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        elif s.stage == "flat":
            shape = (1, *s.x.shape[1:])
            s.x = s.x * scale.view(shape)
            s.bias = s.bias * scale.view(shape) + shift.view(shape)
        else:
            s.x = s.x * scale
            s.bias = s.bias * scale + shift

    elif isinstance(layer, nn.Conv2d):
        if (s.stage != "spatial" or layer.kernel_size != (1, 1) or layer.stride != (1, 1)
                or layer.padding not in ((0, 0), "valid") or layer.groups != 1):
            raise UnsupportedHeadError(f"only 1x1, stride-1, unpadded, ungrouped Conv2d is position-wise: {layer}")
        s.x = functional.conv2d(s.x, layer.weight)
        s.bias = functional.conv2d(s.bias, layer.weight, layer.bias)

    elif isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        if s.stage != "spatial" or layer.output_size not in (1, (1, 1)):
            raise UnsupportedHeadError(f"only global pooling to 1x1 is supported: {layer}")
        batch, channels, h, w = s.x.shape
        contributions = s.x.flatten(2)  # (B, C, N)
        bias = s.bias.expand(batch, channels, h, w).flatten(2)
        if isinstance(layer, nn.AdaptiveAvgPool2d):
            s.x = contributions.transpose(1, 2) / (h * w)
            s.bias = bias.mean(dim=2)
        else:
            # Paper Eq. 7: the max mask turns GMP into masked GAP; the argmax is the one
            # the forward pass picked (first maximum, as torch does).
            _, index = functional.adaptive_max_pool2d(s.value, 1, return_indices=True)
            index = index.flatten(1)  # (B, C) flat position per channel
            mask = torch.zeros_like(contributions).scatter_(2, index.unsqueeze(2), 1.0)
            s.x = (contributions * mask).transpose(1, 2)
            s.bias = bias.gather(2, index.unsqueeze(2)).squeeze(2)
        s.stage = "vector"
        s.pooled_4d = True

    elif isinstance(layer, nn.Flatten):
        if s.stage == "spatial":
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise UnsupportedHeadError(f"Flatten must flatten (C, h, w): {layer}")
            batch, channels, h, w = s.x.shape
            s.x = s.x.reshape(batch, channels, h * w)
            s.bias = s.bias.expand(batch, channels, h, w).reshape(batch, channels, h * w)
            s.stage = "flat"
        elif not s.pooled_4d and s.stage == "flat":
            raise UnsupportedHeadError("second Flatten")
        s.pooled_4d = False

    elif isinstance(layer, nn.Linear):
        if s.pooled_4d:
            raise UnsupportedHeadError("Linear on a (B, C, 1, 1) tensor; add nn.Flatten")
        if s.stage == "flat":
            # W (d, C*N) viewed as (d, C, N): F_p = W[:, :, p] A_p, never forming the flat vector.
            _, channels, positions = s.x.shape
            weight = layer.weight.view(layer.out_features, channels, positions)
            s.x = torch.einsum("dcn,bcn->bnd", weight, s.x)
            s.bias = functional.linear(s.bias.flatten(1), layer.weight, layer.bias)
            s.stage = "vector"
        elif s.stage == "vector":
            s.x = torch.matmul(s.x, layer.weight.t())
            s.bias = functional.linear(s.bias, layer.weight, layer.bias)
        else:
            raise UnsupportedHeadError("Linear applied to a spatial feature map")

    else:
        raise UnsupportedHeadError(f"no closed form for layer {type(layer).__name__}")
    s.value = output


# ---------------------------------------------------------------------------------------------
# Taylor expansion (generic differentiable heads)


def _taylor(head: nn.Module, feature_map: torch.Tensor, chunk_elements: int = 1 << 25) -> PositionEmbeddings:
    """F_p = J_p A_p via one forward-mode JVP per position (tangent = A masked to p)."""
    from torch.func import jvp, vmap

    batch, channels, h, w = feature_map.shape
    positions = h * w
    with torch.no_grad():
        embedding = head(feature_map)
    if embedding.dim() != 2:
        raise ArgumentError("head", f"must return (B, l) embeddings, returned shape {tuple(embedding.shape)}")

    def directional_derivative(tangent: torch.Tensor) -> torch.Tensor:
        return jvp(head, (feature_map,), (tangent,))[1]

    per_position = feature_map.numel()
    chunk = max(1, min(positions, chunk_elements // max(per_position, 1)))
    flat = feature_map.flatten(2)  # (B, C, N)
    pieces = []
    for start in range(0, positions, chunk):
        stop = min(positions, start + chunk)
        eye = torch.zeros(stop - start, positions, dtype=feature_map.dtype, device=feature_map.device)
        eye[torch.arange(stop - start), torch.arange(start, stop)] = 1
        tangents = (flat.unsqueeze(0) * eye.view(stop - start, 1, 1, positions)).view(
            stop - start, batch, channels, h, w)
        with torch.no_grad():
            pieces.append(vmap(directional_derivative)(tangents))  # (chunk, B, l)
    features = torch.cat(pieces, 0).transpose(0, 1).contiguous()  # (B, N, l)
    bias = embedding - features.sum(1)
    residual = linearisation_residual(head, feature_map, features.sum(1))
    return PositionEmbeddings(features, bias, embedding, (h, w), "autograd", residual)


def linearisation_residual(head: nn.Module, feature_map: torch.Tensor, jacobian_times_a: torch.Tensor,
                           step: float = 1e-3) -> torch.Tensor:
    r"""How far the head departs from its tangent affine map, per sample.

    .. math:: \rho = \frac{\lVert g((1+h)A) - g(A) - h\,J A \rVert}{h\,\lVert J A \rVert}, \quad h = 10^{-3},

    evaluated in float64 on a copy of the head (J A itself comes from float32, so
    the noise floor is ~1e-7). Heads that are affine around A (every closed-form
    head away from ReLU/argmax ties) stay at that floor; a curved head (Tanh,
    an L2 normalisation inside the head...) gives about (h/2) x its relative
    curvature along A, 1e-4 and up in practice. Then the bias B = E - sum_p F_p
    also holds the non-linear remainder of the head.
    """
    try:
        head64, feature_map64 = copy.deepcopy(head).double(), feature_map.double()
    except Exception:  # noqa: BLE001 - a head that cannot be copied is measured in its own precision
        head64, feature_map64 = head, feature_map
    with torch.no_grad():
        base = head64(feature_map64)
        moved = head64(feature_map64 * (1 + step))
    jacobian_times_a = jacobian_times_a.to(base.dtype)
    remainder = moved - base - step * jacobian_times_a
    denominator = (step * jacobian_times_a.norm(dim=1)).clamp_min(torch.finfo(base.dtype).tiny)
    return (remainder.norm(dim=1) / denominator).to(feature_map.dtype)
