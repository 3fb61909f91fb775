r"""Activation decomposition of a pair's similarity (Zhu, Yang, Chen, IEEE TIP 2021, Eq. 5).

With position embeddings ``E_q = sum_p F^q_p + B_q`` and ``E_r = sum_x F^r_x + B_r``
(:mod:`eml_core.position_embeddings`) and ``Z = |E_q| |E_r|`` (cosine) or 1 (dot):

* point-to-point:             ``P[p, x] = F^q_p . F^r_x / Z``
* overall map, Decomposition: ``O_q[p] = F^q_p . (sum_x F^r_x) / Z``
* overall map, Decomposition+Bias: ``O_q[p] = F^q_p . E_r / Z``
* overall map as the authors' code behind Table I computes "Decomposition": every pair rectified
  before the sum, ``O_q[p] = sum_x max(P[p, x] / max P, 0)`` (:meth:`PairExplanation.overall_pairwise`)
* completeness (exact):
  ``S = sum P + sum_p F^q_p . B_r / Z + sum_x F^r_x . B_q / Z + B_q . B_r / Z``
* point-specific map of a pixel of q: ``f . F^r_x / Z`` with f = F^q bilinearly
  sampled at the pixel (:mod:`eml_core.sampling`); symmetric for r.
* partial similarity: ``s = f . E_g / (|E_q| |E_g|)`` against stored gallery embeddings.

Raw maps are signed tensors at feature resolution on the model's device;
presentation (rectify, upsample, normalise) is :mod:`eml_core.presentation`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from eml_core.errors import ArgumentError
from eml_core.feature_maps import as_image_batch, compute_feature_map, model_device
from eml_core.gradcam import grad_cam_from_features
from eml_core.models import EmbeddingModel, inference_mode_of
from eml_core.position_embeddings import PositionEmbeddings, position_embeddings
from eml_core.sampling import box_weights, point_weights

SIMILARITIES = ("cosine", "dot")
SIDES = ("query", "retrieved")


def _side(side: str) -> str:
    aliases = {"q": "query", "query": "query", "r": "retrieved", "retrieved": "retrieved"}
    if side not in aliases:
        raise ArgumentError("side", f"expected 'query' or 'retrieved', got {side!r}")
    return aliases[side]


@dataclass
class PairExplanation:
    """Everything the decomposition says about a batch of B (query, retrieved) pairs."""

    query: PositionEmbeddings
    retrieved: PositionEmbeddings
    similarity_kind: str
    normaliser: torch.Tensor          # Z, (B,)
    similarity: torch.Tensor          # S from the embeddings, (B,)
    degenerate: torch.Tensor          # (B,) bool: zero norm or non-finite embedding; maps are 0
    input_sizes: dict[str, tuple[int, int]]
    feature_maps: dict[str, torch.Tensor] = field(repr=False)
    heads: dict[str, nn.Module] = field(repr=False)
    _point_to_point: torch.Tensor | None = field(default=None, repr=False)

    # --- helpers -----------------------------------------------------------------------------
    def _pair(self, side: str) -> tuple[PositionEmbeddings, PositionEmbeddings]:
        side = _side(side)
        return (self.query, self.retrieved) if side == "query" else (self.retrieved, self.query)

    def _divide(self, values: torch.Tensor) -> torch.Tensor:
        """Divide by Z per pair (leading dim B); degenerate pairs give exact zeros."""
        shape = (-1,) + (1,) * (values.dim() - 1)
        safe = torch.where(self.degenerate, torch.ones_like(self.normaliser), self.normaliser)
        out = values / safe.view(shape)
        return torch.where(self.degenerate.view(shape), torch.zeros_like(out), out)

    @property
    def batch_size(self) -> int:
        return int(self.similarity.shape[0])

    def feature_size(self, side: str) -> tuple[int, int]:
        return self._pair(side)[0].feature_size

    def embedding(self, side: str) -> torch.Tensor:
        return self._pair(side)[0].embedding

    # --- maps --------------------------------------------------------------------------------
    @property
    def point_to_point(self) -> torch.Tensor:
        """``P`` as ``(B, hq, wq, hr, wr)``."""
        if self._point_to_point is None:
            product = torch.bmm(self.query.features, self.retrieved.features.transpose(1, 2))
            self._point_to_point = self._divide(product).view(
                self.batch_size, *self.query.feature_size, *self.retrieved.feature_size)
        return self._point_to_point

    def overall(self, side: str, bias: bool = False) -> torch.Tensor:
        """Overall map of ``side``, ``(B, h, w)``: "Decomposition" (bias=False) or "Decomposition+Bias"."""
        mine, other = self._pair(side)
        partner = other.embedding if bias else other.features.sum(1)
        values = torch.bmm(mine.features, partner.unsqueeze(2)).squeeze(2)
        return self._divide(values).view(self.batch_size, *mine.feature_size)

    def overall_pairwise(self, side: str) -> torch.Tensor:
        """Overall map of ``side`` with the ReLU on every pair, ``(B, h, w)``: the authors' "Decomposition".

        ``O_q[p] = sum_x max(P[p, x] / max P, 0)`` (and ``O_r[x] = sum_p ...`` for the retrieved side), as
        the evaluation code behind the paper's Table I and ``Image_Retrieval/demo.py`` of the published code
        compute it: the point-to-point matrix divided by its maximum, negative pairs dropped, then summed over
        the partner image. :meth:`overall` (``bias=False``) sums first and rectifies the sum (at
        presentation), so there a negative pair cancels a positive one; here it cannot. A pair whose P has no
        positive entry (``max P <= 0``; dividing would flip the signs) gets an all-zero map, flagged at
        presentation like any map with nothing positive. Needs ``B x hw_q x hw_r`` values, never
        ``hw_q x hw_r x l``.
        """
        side = _side(side)
        product = self._divide(torch.bmm(self.query.features, self.retrieved.features.transpose(1, 2)))
        peak = product.flatten(1).max(1).values.view(-1, 1, 1)
        positive = peak > 0
        scaled = torch.where(positive, product / torch.where(positive, peak, torch.ones_like(peak)),
                             torch.zeros_like(product)).clamp_min(0)
        if side == "query":
            return scaled.sum(2).view(self.batch_size, *self.query.feature_size)
        return scaled.sum(1).view(self.batch_size, *self.retrieved.feature_size)

    def partial_embedding(self, side: str, points_xy=None, boxes=None,
                          image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``f`` for pixel points ``(K, 2)`` (x, y) or boxes ``(K, 4)`` (x0, y0, x1, y1) of ``side``: ``(B, K, l)``.

        Coordinates are pixels of an image of ``image_size`` (height, width),
        by default the network input of that side; any size related by a plain
        resize gives the same answer.
        """
        side = _side(side)
        mine, _ = self._pair(side)
        if (points_xy is None) == (boxes is None):
            raise ArgumentError("points_xy/boxes", "give exactly one of points_xy or boxes")
        size = (int(image_size[0]), int(image_size[1])) if image_size is not None else self.input_sizes[side]
        if points_xy is not None:
            weights = point_weights(points_xy, size, mine.feature_size, argument=f"{side} points_xy")
        else:
            weights = box_weights(boxes, size, mine.feature_size, argument=f"{side} boxes")
        weights = weights.to(dtype=mine.features.dtype, device=mine.features.device)
        return torch.einsum("kn,bnl->bkl", weights, mine.features)

    def point_specific(self, side: str, points_xy, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Maps over the *other* image for pixel points of ``side``: ``(B, K, h_other, w_other)``."""
        _, other = self._pair(side)
        f = self.partial_embedding(side, points_xy=points_xy, image_size=image_size)
        values = torch.einsum("bkl,bnl->bkn", f, other.features)
        return self._divide(values).view(self.batch_size, f.shape[1], *other.feature_size)

    def point_specific_cells(self, side: str, cells) -> torch.Tensor:
        """Maps over the *other* image for feature cells of ``side``: ``(B, K, h_other, w_other)``.

        ``cells`` ``(B, K)`` (or ``(B,)``) are flat raster indices into ``side``'s
        feature grid, one set per pair. The map of cell p is row p of P
        (``F_p . F^other_x / Z``), which is also :meth:`point_specific` at the
        pixel at the cell's centre (bilinear weight 1 there): one
        matrix-vector product per cell, never all of P.
        """
        mine, other = self._pair(side)
        cells = torch.as_tensor(cells, device=mine.features.device)
        if cells.dim() == 1:
            cells = cells.unsqueeze(1)
        count = mine.features.shape[1]
        if cells.dim() != 2 or cells.shape[0] != self.batch_size or cells.is_floating_point():
            raise ArgumentError("cells", f"expected integer cell indices of shape ({self.batch_size}, K), "
                                         f"got {tuple(cells.shape)} {cells.dtype}")
        if cells.numel() and (int(cells.min()) < 0 or int(cells.max()) >= count):
            raise ArgumentError("cells", f"cell indices must be in [0, {count}) for the {side} feature grid "
                                         f"{mine.feature_size}")
        index = cells.long().unsqueeze(-1).expand(-1, -1, mine.features.shape[-1])
        f = mine.features.gather(1, index)                                    # (B, K, l)
        values = torch.bmm(f, other.features.transpose(1, 2).to(f))          # (B, K, n_other)
        return self._divide(values).view(self.batch_size, cells.shape[1], *other.feature_size)

    def partial_similarity(self, side: str, gallery_embeddings: torch.Tensor, points_xy=None, boxes=None,
                           image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Similarity of a region of ``side`` to stored gallery embeddings ``(G, l)``: ``(B, K, G)``."""
        f = self.partial_embedding(side, points_xy=points_xy, boxes=boxes, image_size=image_size)
        return partial_similarity(f, self.embedding(side), gallery_embeddings, self.similarity_kind)

    # --- exactness ---------------------------------------------------------------------------
    @property
    def completeness_residual(self) -> torch.Tensor:
        """``S - (sum P + bias terms)`` per pair (B,), computed in float64; ~0 by construction."""
        fq = self.query.features.double().sum(1)
        fr = self.retrieved.features.double().sum(1)
        bq, br = self.query.bias.double(), self.retrieved.bias.double()
        terms = (fq * fr).sum(1) + (fq * br).sum(1) + (fr * bq).sum(1) + (bq * br).sum(1)
        z = torch.where(self.degenerate, torch.ones_like(self.normaliser), self.normaliser).double()
        reconstructed = torch.where(self.degenerate, torch.zeros_like(terms), terms / z)
        return self.similarity.double() - reconstructed

    @property
    def linearisation_residual(self) -> dict[str, torch.Tensor]:
        """Per side, how far the head is from affine at A (0 for closed-form heads)."""
        return {"query": self.query.linearisation_residual, "retrieved": self.retrieved.linearisation_residual}

    # --- baselines ---------------------------------------------------------------------------
    def grad_cam(self, normalised: bool = True) -> dict[str, torch.Tensor]:
        """Grad-CAM for metric learning on the same feature maps (no backbone recomputation)."""
        kind = self.similarity_kind if normalised else "dot"
        return grad_cam_from_features(self.heads["query"], self.heads["retrieved"],
                                      self.feature_maps["query"], self.feature_maps["retrieved"], kind)


def partial_similarity(partial: torch.Tensor, own_embedding: torch.Tensor, gallery_embeddings: torch.Tensor,
                       similarity: str = "cosine") -> torch.Tensor:
    """``s = f . E_g / (|E_own| |E_g|)`` (cosine) or ``f . E_g`` (dot).

    ``partial`` (B, K, l), ``own_embedding`` (B, l), ``gallery_embeddings`` (G, l)
    -> (B, K, G). Gallery embeddings are reused as given, never recomputed; a
    zero-norm embedding gives 0.
    """
    scores = torch.einsum("bkl,gl->bkg", partial, gallery_embeddings.to(partial))
    if similarity == "dot":
        return scores
    own = own_embedding.norm(dim=1).view(-1, 1, 1)
    gallery = gallery_embeddings.to(partial).norm(dim=1).view(1, 1, -1)
    z = own * gallery
    return torch.where(z > 0, scores / z.clamp_min(torch.finfo(z.dtype).tiny), torch.zeros_like(scores))


def explain_pair(
    model: EmbeddingModel,
    query: torch.Tensor,
    retrieved: torch.Tensor,
    similarity: str = "cosine",
    retrieved_model: EmbeddingModel | None = None,
    method: str = "auto",
) -> PairExplanation:
    """Decompose the similarity of B pairs of preprocessed images.

    ``query`` (B, 3, Hq, Wq) and ``retrieved`` (B, 3, Hr, Wr) may differ in size
    (e.g. a 224x1232 panorama against a 512x512 aerial image).
    ``retrieved_model`` is the second branch of a two-branch (cross-view) model;
    by default both sides share ``model``. Models run in eval mode and are
    restored afterwards.
    """
    if similarity not in SIMILARITIES:
        raise ArgumentError("similarity", f"expected one of {SIMILARITIES}, got {similarity!r}")
    retrieved_model = retrieved_model or model
    query = as_image_batch(query, "query")
    retrieved = as_image_batch(retrieved, "retrieved")
    if query.shape[0] != retrieved.shape[0]:
        raise ArgumentError("retrieved", f"batch of {retrieved.shape[0]} does not match the query batch of "
                                         f"{query.shape[0]}")
    query = query.to(model_device(model))
    retrieved = retrieved.to(model_device(retrieved_model))

    with inference_mode_of(model, retrieved_model):
        map_q = compute_feature_map(model, query, "query")
        map_r = compute_feature_map(retrieved_model, retrieved, "retrieved")
        pe_q = position_embeddings(model.head, map_q, method)
        pe_r = position_embeddings(retrieved_model.head, map_r, method)

    e_q, e_r = pe_q.embedding, pe_r.embedding.to(pe_q.embedding.device)
    dot = (e_q * e_r).sum(1)
    finite = torch.isfinite(e_q).all(1) & torch.isfinite(e_r).all(1)
    if similarity == "cosine":
        normaliser = e_q.norm(dim=1) * e_r.norm(dim=1)
        degenerate = ~finite | (normaliser <= 0)
    else:
        normaliser = torch.ones_like(dot)
        degenerate = ~finite
    safe = torch.where(degenerate, torch.ones_like(normaliser), normaliser)
    score = torch.where(degenerate, torch.zeros_like(dot), dot / safe)
    if degenerate.any():
        warnings.warn(f"pairs {degenerate.nonzero().flatten().tolist()} have a zero-norm or non-finite embedding: "
                      f"similarity and maps set to 0 and flagged in `degenerate`", stacklevel=2)
    return PairExplanation(
        query=pe_q, retrieved=pe_r, similarity_kind=similarity, normaliser=normaliser, similarity=score,
        degenerate=degenerate,
        input_sizes={"query": (int(query.shape[-2]), int(query.shape[-1])),
                     "retrieved": (int(retrieved.shape[-2]), int(retrieved.shape[-1]))},
        feature_maps={"query": map_q, "retrieved": map_r},
        heads={"query": model.head, "retrieved": retrieved_model.head},
    )
