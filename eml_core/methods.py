r"""The registry of overall-map methods: one entry per method, used by localization, ``eml explain`` and studies.

An entry names the method as results tables do (``decomposition``), as the paper
does ("Decomposition"), and reads the method's raw maps off a
:class:`~eml_core.decomposition.PairExplanation`: one explanation (one backbone
pass per image) serves every method. Adding a method is adding one
``@register(...)`` function here; nothing else dispatches on method names.

Maps are raw, signed, at feature resolution: ``{"query": (B, hq, wq), "retrieved": (B, hr, wr)}``.
A method with point-specific maps also names how to read them
(``point_maps(explanation, side, points_xy) -> (B, K, h_other, w_other)``, the
maps over the *other* image for K pixels of ``side``); :func:`method_point_maps`
is the one dispatch for those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from eml_core.errors import ArgumentError

if TYPE_CHECKING:
    from eml_core.decomposition import PairExplanation

SIDES = ("query", "retrieved")
SideMaps = dict[str, torch.Tensor]
PointMaps = Callable[["PairExplanation", str, object], torch.Tensor]


@dataclass(frozen=True)
class MapMethod:
    """One overall-map method."""

    name: str                 # as in results tables and on the command line
    paper_name: str           # as the paper writes it
    compute: Callable[["PairExplanation"], SideMaps]
    description: str          # the equation, from the compute function's docstring
    point_specific: bool      # whether the method also has point-specific maps (the decomposition family)
    point_maps: PointMaps | None = None  # (explanation, side, points_xy) -> (B, K, h_other, w_other)


REGISTRY: dict[str, MapMethod] = {}


def register(name: str, paper_name: str, point_specific: bool = False, point_maps: PointMaps | None = None):
    """Decorator: add ``compute(explanation) -> {side: maps}`` to the registry under ``name``.

    ``point_specific=True`` without ``point_maps`` gives the method the decomposition's point-specific maps
    (:func:`decomposition_point_maps`); ``point_maps`` names any other reader (and implies point_specific).
    """

    def add(compute: Callable[["PairExplanation"], SideMaps]) -> Callable[["PairExplanation"], SideMaps]:
        if name in REGISTRY:
            raise ValueError(f"map method {name!r} is registered twice")
        reader = point_maps or (decomposition_point_maps if point_specific else None)
        REGISTRY[name] = MapMethod(name, paper_name, compute, " ".join((compute.__doc__ or "").split()),
                                   reader is not None, reader)
        return compute

    return add


def get_method(name: str) -> MapMethod:
    if name not in REGISTRY:
        raise ArgumentError("methods", f"unknown method {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def method_maps(explanation: "PairExplanation", methods=None) -> dict[str, SideMaps]:
    """Raw overall maps ``{method: {side: (B, h, w)}}`` of an explanation, for each named method."""
    return {name: get_method(name).compute(explanation) for name in (methods or DEFAULT_METHODS)}


def method_point_maps(explanation: "PairExplanation", side: str, points_xy, methods=None) -> dict[str, torch.Tensor]:
    """Point-specific maps ``{method: (B, K, h_other, w_other)}`` for pixel points ``(K, 2)`` (x, y) of ``side``,
    for each named method that has them (the others are left out)."""
    chosen = [get_method(name) for name in (methods or DEFAULT_METHODS)]
    return {m.name: m.point_maps(explanation, side, points_xy) for m in chosen if m.point_maps is not None}


def decomposition_point_maps(explanation: "PairExplanation", side: str, points_xy) -> torch.Tensor:
    """f . F^other_x / Z with f = F^side bilinearly sampled at each pixel point (paper Eq. 5, point-specific)."""
    return explanation.point_specific(side, points_xy)


@register("gradcam", "Grad-CAM")
def gradcam(explanation: "PairExplanation") -> SideMaps:
    """Grad-CAM for metric learning on the cosine similarity: alpha_k = mean_p dS/dA_{k,p},
    map[p] = sum_k alpha_k A_{k,p} (paper Section V)."""
    return explanation.grad_cam(normalised=True)


@register("gradcam_nonorm", "Grad-CAM (no norm)")
def gradcam_nonorm(explanation: "PairExplanation") -> SideMaps:
    """Grad-CAM with S replaced by the dot product E_q . E_r; with a GAP head it equals Decomposition+Bias
    (paper Appendix A)."""
    return explanation.grad_cam(normalised=False)


@register("decomposition", "Decomposition (ReLU after the sum)", point_specific=True)
def decomposition(explanation: "PairExplanation") -> SideMaps:
    """O_q[p] = F^q_p . (sum_x F^r_x) / Z = sum_x P[p, x]: the point-to-point matrix summed over the partner
    image, ReLU applied after the sum (at presentation), so negative pairs cancel positive ones. Our reading of
    the paper's Eq. 5; the authors' code rectifies each pair instead (decomposition_pairwise)."""
    return {side: explanation.overall(side, bias=False) for side in SIDES}


@register("decomposition_bias", "Decomposition+Bias", point_specific=True)
def decomposition_bias(explanation: "PairExplanation") -> SideMaps:
    """O_q[p] = F^q_p . E_r / Z: the partner's whole embedding, bias included (paper Eq. 5); ReLU after the sum
    (at presentation), as the authors' code does for this method."""
    return {side: explanation.overall(side, bias=True) for side in SIDES}


@register("decomposition_pairwise", "Decomposition", point_specific=True)
def decomposition_pairwise(explanation: "PairExplanation") -> SideMaps:
    """O_q[p] = sum_x max(P[p, x] / max_{p', x'} P[p', x'], 0) with P[p, x] = F^q_p . F^r_x / Z: ReLU on every
    pair BEFORE the sum over the partner image, as the authors' code behind Table I (and Image_Retrieval/demo.py)
    computes "Decomposition"; symmetric for the retrieved side (sum over p). All zero when no pair is positive."""
    return {side: explanation.overall_pairwise(side) for side in SIDES}


DEFAULT_METHODS: tuple[str, ...] = tuple(REGISTRY)
