r"""Faithfulness of similarity explanations: deletion and insertion on the similarity of a pair.

Localization and human studies say whether a map *looks* right; they do not say
whether it explains the model's similarity. This module measures that, for every
map method of the registry (:mod:`eml_core.methods`), the way classification
tools do for a class score (Petsiuk et al.'s deletion/insertion, BMVC 2018;
Rong et al.'s ROAD, ICML 2022), but on the similarity S(q, r) of a pair.

**Where pixels are removed.** On the image the network sees: the photograph
resized to the model's input size (as :class:`~eml_core.models.Preprocessing`
resizes it), RGB in [0, 1]; the perturbed image is then normalised as usual.
Maps (raw, signed, feature resolution) are upsampled bilinearly to that size
(:func:`eml_core.presentation.upsample`).

**Orderings.** A map m over the N pixels of one side orders them by decreasing
m (most positive evidence first); equal values are ordered at random (seeded),
not by position, which would favour the top-left. References:

* ``random``: a map of i.i.d. uniform values at the side's *feature*
  resolution, upsampled like the methods' maps, so the removed regions are
  blobs of the same grain as a real map's (a pixel-level random order would
  remove salt-and-pepper noise instead, a different perturbation);
* ``gradient_oracle``: the similarity's own first-order answer to "which
  pixel's removal lowers S most": o[p] = sum_c dS/dx_{c,p} (x_{c,p} - x~_{c,p}),
  with x~ the fully removed image of the removal operator (blurred image, mean
  colour; for ROAD, whose imputation needs known pixels, the mean colour).

**Curves.** For fractions 0 = f_0 < f_1 < ... < f_K = 1, let T(f) be the first
round(f N) pixels of an ordering and R(x, M) the image x with the pixels of
mask M removed. With the other image of the pair intact,

* deletion:  D(f) = S(R(x, T(f)), other)  (removes the top pixels first; the
  faster it falls, the more faithful the map),
* insertion: I(f) = S(R(x, not T(f)), other)  (starts from the removed image
  and restores the top pixels first; the faster it rises, the better).

AUC is the trapezoid rule over the fractions: sum_k (f_k - f_{k-1})
(c_k + c_{k-1}) / 2, in units of similarity. Lower deletion AUC and higher
insertion AUC are more faithful. Both sides of a pair are evaluated.

**Removal operators** R(x, M) replace the pixels of M by

* ``blur``: the Gaussian-blurred image (sigma = ``blur_sigma`` x the shorter side);
* ``mean``: the image's own mean colour (Quantus's "mean" baseline);
* ``road``: ROAD's noisy linear imputation (Rong et al. 2022): every removed
  pixel is the weighted mean of its 8 neighbours (weight 1/6 for the 4 direct
  neighbours, 1/12 for the diagonals, renormalised over the neighbours inside
  the image), known neighbours fixed: one sparse linear system per mask
  (a discrete Laplace equation with the known pixels as boundary values), then
  Gaussian noise of std ``road_noise`` on the imputed pixels. Imputing from the
  image itself avoids the distribution shift of constant or blurred fills that
  makes deletion curves unfair. With every pixel removed there is nothing to
  impute from: the fill is the image's mean colour (plus the noise).

**Point-specific faithfulness.** For a pixel u of one side (by default the
query) and its point-specific map on the other image, delete the map's top
region (``region_fraction`` of the pixels) from the other image and record the
drop of the partial similarity s(u; r) = f_u . E_r / (|E_q| |E_r|) (f_u fixed,
E_r recomputed): d_top. The same for random regions of equal area (upsampled
feature-resolution random maps): d_random, and for the top region of the
method's *overall* map on that image: d_overall. The ratio reported per method
is mean(d_top) / mean(d_random) over all points of all pairs (> 1: the map
finds what the pixel's similarity rests on). The pixels are the centres of the
feature cells with the largest partial similarity (``points_per_pair`` of them),
so the quantity measured is a large share of the pair's similarity.

**Cost.** Perturbed images of every method, reference, step and curve of a
group of pairs are generated lazily and embedded in batches of ``batch_size``
(a few large forwards per shard); :func:`count_forward_passes` counts the
backbone passes of any call.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as functional

from eml_core.datasets import ErrorRecord
from eml_core.decomposition import SIDES, explain_pair, partial_similarity
from eml_core.errors import ArgumentError, EmlError
from eml_core.feature_maps import model_device
from eml_core.images import load_image
from eml_core.methods import DEFAULT_METHODS, REGISTRY, get_method, method_maps, method_point_maps
from eml_core.models import EmbeddingModel, inference_mode_of
from eml_core.presentation import upsample

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_STEPS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CURVES = ("deletion", "insertion")
RANDOM = "random"
GRADIENT_ORACLE = "gradient_oracle"
REFERENCE_ORDERINGS = (RANDOM, GRADIENT_ORACLE)
DEFAULT_BLUR_SIGMA = 0.05   # of the shorter side: 11 px at 224 x 224
DEFAULT_ROAD_NOISE = 0.01   # std, in [0, 1] pixel units (about 2.5 / 255)

# ROAD's neighbour weights (Rong et al. 2022): direct neighbours 1/6, diagonal neighbours 1/12 (sum 1).
ROAD_NEIGHBOURS = (((0, 1), 1 / 6), ((0, -1), 1 / 6), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
                   ((1, 1), 1 / 12), ((1, -1), 1 / 12), ((-1, 1), 1 / 12), ((-1, -1), 1 / 12))


# ---------------------------------------------------------------------------------------------
# pairs and pixels


@dataclass(frozen=True)
class ImagePair:
    """A pair to evaluate, as image files (what a flow passes between tasks)."""

    pair_id: str
    query: str
    retrieved: str


def as_image_pairs(pairs) -> list[ImagePair]:
    """:class:`ImagePair` objects from ImagePairs or :class:`eml_core.retrieval.Pair` (items with paths)."""
    out = []
    for pair in pairs:
        if isinstance(pair, ImagePair):
            out.append(pair)
        elif hasattr(pair, "query") and hasattr(pair.query, "path"):
            out.append(ImagePair(str(pair.pair_id), str(pair.query.path), str(pair.retrieved.path)))
        else:
            raise ArgumentError("pairs", f"expected ImagePair or retrieval.Pair objects, got {type(pair).__name__}")
    return out


def network_pixels(model: EmbeddingModel, pixels: torch.Tensor, source: str = "image") -> torch.Tensor:
    """An RGB image (3, H, W) in [0, 1] at the size the network sees (its preprocessing's resize, antialiased)."""
    size = model.preprocessing.input_size
    pixels = pixels.float()
    if size is not None and tuple(pixels.shape[-2:]) != tuple(size):
        pixels = functional.interpolate(pixels.unsqueeze(0), size=tuple(size), mode="bilinear", align_corners=False,
                                        antialias=True)[0]
    model.check_input_size(pixels.shape[-2], pixels.shape[-1], source)
    return pixels.clamp(0, 1)


@dataclass
class LoadedPair:
    index: int
    pair: ImagePair
    pixels: dict[str, torch.Tensor]  # side -> (3, H, W) in [0, 1] at the network's input size


def load_pair_pixels(model: EmbeddingModel, pairs: list[ImagePair], stage: str,
                errors: list[ErrorRecord]) -> list[LoadedPair]:
    loaded = []
    for index, pair in enumerate(pairs):
        pixels = {}
        for side, path in (("query", pair.query), ("retrieved", pair.retrieved)):
            try:
                pixels[side] = network_pixels(model, load_image(path).pixels, path)
            except EmlError as error:
                errors.append(ErrorRecord(stage, pair.pair_id, path, None,
                                          f"pair left out: its {side} image cannot be used ({error})"))
                break
        else:
            loaded.append(LoadedPair(index, pair, pixels))
    return loaded


def stackable_groups(loaded: list[LoadedPair], size: int) -> Iterator[list[LoadedPair]]:
    """Consecutive groups of at most ``size`` pairs whose query and retrieved shapes agree (stackable)."""
    groups: dict[tuple, list[LoadedPair]] = {}
    for item in loaded:
        key = (tuple(item.pixels["query"].shape), tuple(item.pixels["retrieved"].shape))
        groups.setdefault(key, []).append(item)
    for members in groups.values():
        for start in range(0, len(members), size):
            yield members[start:start + size]


def _stable_seed(seed: int, *parts: str) -> np.random.Generator:
    """A generator that depends only on the seed and the names given (the pair, the side, ...), never on which
    shard or batch the pair fell in: results do not change with the batch size or the sharding."""
    return np.random.default_rng([seed, *(zlib.crc32(part.encode()) for part in parts)])


# ---------------------------------------------------------------------------------------------
# orderings


def maps_at_image_size(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Raw signed maps ``(..., h, w)`` upsampled bilinearly (half-pixel centres) to ``size``, as float64 numpy."""
    return upsample(maps.detach().float().cpu(), (int(size[0]), int(size[1]))).double().numpy()


def pixel_order(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel indices (raveled) in removal order: decreasing value, ties in random order, non-finite last."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = np.where(np.isfinite(flat), flat, -np.inf)
    return np.lexsort((rng.random(flat.size), -flat))


def pixel_ranks(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of every pixel (raveled) in :func:`pixel_order`: the top pixel has rank 0."""
    order = pixel_order(values, rng)
    ranks = np.empty(order.size, dtype=np.int32)
    ranks[order] = np.arange(order.size, dtype=np.int32)
    return ranks


def step_counts(steps, pixels: int) -> list[int]:
    """round(f N) for each fraction f."""
    return [math.floor(f * pixels + 0.5) for f in steps]


def random_map(feature_size: tuple[int, int], image_size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The ``random`` reference: uniform values at feature resolution, upsampled like a method's map."""
    values = torch.from_numpy(rng.random(feature_size))
    return maps_at_image_size(values, image_size)


def similarity_gradients(model: EmbeddingModel, query: torch.Tensor, retrieved: torch.Tensor,
                         similarity: str = "cosine") -> dict[str, torch.Tensor]:
    """dS/dx for the [0, 1] pixels ``(B, 3, H, W)`` of both sides (one backward pass for the batch)."""
    pixels = {"query": query.detach().clone().requires_grad_(True),
              "retrieved": retrieved.detach().clone().requires_grad_(True)}
    with inference_mode_of(model), torch.enable_grad():
        e_q = model(model.preprocessing(pixels["query"]))
        e_r = model(model.preprocessing(pixels["retrieved"]))
        score = _similarity(e_q, e_r, similarity)
        grads = torch.autograd.grad(score.sum(), (pixels["query"], pixels["retrieved"]), allow_unused=True)
    return {side: (g if g is not None else torch.zeros_like(pixels[side])).detach()
            for side, g in zip(SIDES, grads, strict=True)}


def gradient_oracle_map(pixels: torch.Tensor, gradient: torch.Tensor, removed: torch.Tensor) -> np.ndarray:
    """o[p] = sum_c dS/dx_{c,p} (x_{c,p} - x~_{c,p}): the first-order drop of S when pixel p alone is removed."""
    return (gradient.cpu().double() * (pixels.double() - removed.double())).sum(0).numpy()


# ---------------------------------------------------------------------------------------------
# removal operators


@dataclass(frozen=True)
class Removal:
    """How removed pixels are filled: one of :data:`REMOVALS`, with its settings."""

    name: str
    blur_sigma: float = DEFAULT_BLUR_SIGMA
    road_noise: float = DEFAULT_ROAD_NOISE

    def __post_init__(self):
        if self.name not in REMOVALS:
            raise ArgumentError("removal", f"unknown removal {self.name!r}; choose from {', '.join(REMOVALS)}")
        if not (math.isfinite(self.blur_sigma) and self.blur_sigma > 0):
            raise ArgumentError("blur_sigma", f"must be a positive fraction of the shorter side, got {self.blur_sigma}")
        if not (math.isfinite(self.road_noise) and self.road_noise >= 0):
            raise ArgumentError("road_noise", f"must be a finite std >= 0, got {self.road_noise}")

    def apply(self, pixels: torch.Tensor, removed: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """``pixels`` (3, H, W) with the pixels of each mask ``removed`` (K, H, W) or (H, W) filled: (K, 3, H, W).

        ``rng`` draws ROAD's noise; ``None`` means no noise (exact imputation).
        """
        masks = np.asarray(removed, dtype=bool)
        masks = masks[None] if masks.ndim == 2 else masks
        if masks.shape[1:] != tuple(pixels.shape[-2:]):
            raise ArgumentError("removed", f"masks of shape {masks.shape[1:]} do not fit an image of "
                                           f"{tuple(pixels.shape[-2:])}")
        image = pixels.detach().cpu().double().numpy()
        return torch.from_numpy(REMOVALS[self.name].function(self, image, masks, rng)).float()

    def fully_removed(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image with every pixel removed (no noise): what insertion starts from, the oracle's baseline."""
        return self.apply(pixels, np.ones(pixels.shape[-2:], dtype=bool))[0]


def blur_fill(removal: Removal, image: np.ndarray, masks: np.ndarray, rng) -> np.ndarray:
    import cv2

    sigma = removal.blur_sigma * min(image.shape[1:])
    blurred = cv2.GaussianBlur(np.ascontiguousarray(image.transpose(1, 2, 0)), (0, 0), sigmaX=sigma, sigmaY=sigma,
                               borderType=cv2.BORDER_REFLECT).reshape(image.shape[1], image.shape[2], -1)
    blurred = blurred.transpose(2, 0, 1)
    return np.where(masks[:, None], blurred[None], image[None])


def mean_fill(removal: Removal, image: np.ndarray, masks: np.ndarray, rng) -> np.ndarray:
    colour = image.mean(axis=(1, 2), keepdims=True)
    return np.where(masks[:, None], colour[None], image[None])


def road_fill(removal: Removal, image: np.ndarray, masks: np.ndarray, rng) -> np.ndarray:
    out = np.empty((len(masks), *image.shape))
    for k, mask in enumerate(masks):
        out[k] = road_impute(image, mask, removal.road_noise if rng is not None else 0.0, rng)
    return out


@dataclass(frozen=True)
class Fill:
    """A removal operator's fill function and whether it solves something per mask (then perturbed images are
    produced one at a time, as the batches need them, rather than all steps of a curve at once)."""

    function: Callable
    per_mask: bool


REMOVALS: dict[str, Fill] = {"blur": Fill(blur_fill, False), "mean": Fill(mean_fill, False),
                             "road": Fill(road_fill, True)}


def road_impute(image: np.ndarray, removed: np.ndarray, noise: float = 0.0,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """ROAD's noisy linear imputation of the ``removed`` pixels (H, W) of ``image`` (C, H, W).

    Every removed pixel i satisfies sum_j w_ij (x_i - x_j) = 0 over its neighbours
    j inside the image (ROAD_NEIGHBOURS weights): unknowns on the left, known
    neighbours on the right, one sparse symmetric system shared by the channels,
    solved by sparse LU (SuperLU, minimum-degree ordering on A + A^T). The
    system is singular only when no pixel is known; then the fill is the mean
    colour. A linear ramp is reproduced exactly wherever the removed pixels'
    neighbourhoods lie inside the image (the stencil is symmetric).
    """
    from scipy import sparse
    from scipy.sparse.linalg import splu

    image = np.asarray(image, dtype=np.float64)
    channels, height, width = image.shape
    mask = np.asarray(removed, dtype=bool).ravel()
    unknown = np.flatnonzero(mask)
    out = image.reshape(channels, -1).copy()
    if unknown.size == 0:
        return out.reshape(image.shape)
    if unknown.size == mask.size:
        out[:] = image.reshape(channels, -1).mean(1, keepdims=True)
    else:
        variable = np.full(mask.size, -1, dtype=np.int64)
        variable[unknown] = np.arange(unknown.size)
        ys, xs = np.divmod(unknown, width)
        diagonal = np.zeros(unknown.size)
        rows, cols, values = [], [], []
        known_side = np.zeros((unknown.size, channels))
        flat = image.reshape(channels, -1)
        for (dy, dx), weight in ROAD_NEIGHBOURS:
            y, x = ys + dy, xs + dx
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            equation = np.flatnonzero(inside)
            neighbour = y[inside] * width + x[inside]
            diagonal[equation] += weight
            is_unknown = mask[neighbour]
            rows.append(equation[is_unknown])
            cols.append(variable[neighbour[is_unknown]])
            values.append(np.full(int(is_unknown.sum()), -weight))
            np.add.at(known_side, equation[~is_unknown], weight * flat[:, neighbour[~is_unknown]].T)
        index = np.arange(unknown.size)
        system = sparse.csc_matrix((np.concatenate([diagonal, *values]),
                                    (np.concatenate([index, *rows]), np.concatenate([index, *cols]))),
                                   shape=(unknown.size, unknown.size))
        solution = splu(system, permc_spec="MMD_AT_PLUS_A").solve(known_side)
        out[:, unknown] = solution.T
    if noise > 0 and rng is not None:
        out[:, unknown] += rng.normal(0.0, noise, size=(channels, unknown.size))
    return np.clip(out, 0.0, 1.0).reshape(image.shape)


def remove(pixels: torch.Tensor, removed, removal: str = "blur", blur_sigma: float = DEFAULT_BLUR_SIGMA,
           road_noise: float = DEFAULT_ROAD_NOISE, rng: np.random.Generator | None = None) -> torch.Tensor:
    """``pixels`` (3, H, W) in [0, 1] with the pixels of each mask (K, H, W) removed by ``removal``: (K, 3, H, W)."""
    return Removal(removal, blur_sigma, road_noise).apply(pixels, removed, rng)


# ---------------------------------------------------------------------------------------------
# forwards


def _similarity(embeddings: torch.Tensor, partners: torch.Tensor, kind: str) -> torch.Tensor:
    """Row-wise S: dot product, or cosine with 0 for a zero-norm embedding."""
    dot = (embeddings * partners).sum(-1)
    if kind == "dot":
        return dot
    norms = embeddings.norm(dim=-1) * partners.norm(dim=-1)
    return torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(dot))


@dataclass
class ForwardCount:
    """Backbone passes seen by :func:`count_forward_passes`: batched calls and images."""

    calls: int = 0
    images: int = 0


@contextlib.contextmanager
def count_forward_passes(model: EmbeddingModel) -> Iterator[ForwardCount]:
    """Count every pass through ``model.backbone`` in the block (explanations, gradients, perturbed images)."""
    count = ForwardCount()

    def hook(module, inputs):
        count.calls += 1
        count.images += int(inputs[0].shape[0]) if inputs and hasattr(inputs[0], "shape") else 0

    handle = model.backbone.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def _embed_lazily(model: EmbeddingModel, jobs: Iterable[tuple[object, torch.Tensor]], batch_size: int,
                  device: str, failed: dict) -> dict:
    """Embed the [0, 1] images of ``jobs`` ((key, (3, H, W))) in batches of ``batch_size`` images of one shape.

    Images are produced as the batches fill, so a shard's thousands of perturbed
    images never sit in memory at once. A batch the model cannot process marks
    its keys in ``failed`` (key -> message); the rest go on.
    """
    embeddings: dict = {}
    pending: dict[tuple, list] = {}

    def run(batch: list) -> None:
        keys = [key for key, _ in batch]
        try:
            with torch.no_grad():
                x = model.preprocessing(torch.stack([image for _, image in batch]).to(device))
                out = model(x).float().cpu()
        except (RuntimeError, EmlError) as error:
            for key in keys:
                failed[key] = f"forward pass failed: {str(error).splitlines()[0][:200]}"
            return
        embeddings.update(zip(keys, out, strict=True))

    for key, image in jobs:
        bucket = pending.setdefault(tuple(image.shape), [])
        bucket.append((key, image))
        if len(bucket) >= batch_size:
            run(bucket)
            pending[tuple(image.shape)] = []
    for bucket in pending.values():
        if bucket:
            run(bucket)
    return embeddings


# ---------------------------------------------------------------------------------------------
# deletion / insertion


def check_steps(steps) -> tuple[float, ...]:
    steps = tuple(float(f) for f in steps)
    if len(steps) < 2 or steps[0] != 0.0 or steps[-1] != 1.0 or any(b <= a for a, b in itertools.pairwise(steps)):
        raise ArgumentError("steps", f"fractions must increase strictly from 0 to 1 (both included), got {steps}")
    return steps


def check_arguments(methods, sides, batch_size: int, similarity: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    methods = tuple(methods or DEFAULT_METHODS)
    for name in methods:
        get_method(name)
    clashes = [name for name in REFERENCE_ORDERINGS if name in REGISTRY]
    if clashes:
        raise ArgumentError("methods", f"map method(s) {clashes} are named like a reference ordering")
    sides = tuple(sides)
    if not sides or any(side not in SIDES for side in sides):
        raise ArgumentError("sides", f"expected some of {SIDES}, got {sides}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError("batch_size", f"must be a positive whole number, got {batch_size!r}")
    if similarity not in ("cosine", "dot"):
        raise ArgumentError("similarity", f"expected 'cosine' or 'dot', got {similarity!r}")
    return methods, sides


@dataclass
class _SideView:
    """One side of one explained pair: what its curves need."""

    loaded: LoadedPair
    side: str
    pixels: torch.Tensor              # (3, H, W) in [0, 1]
    partner: torch.Tensor             # the other side's embedding (l,), on the CPU
    maps: dict[str, np.ndarray]       # ordering -> map at image size (methods and the random reference)
    gradient: torch.Tensor | None     # dS/dx (3, H, W) for the gradient oracle

    @property
    def key(self) -> tuple[int, str]:
        return self.loaded.index, self.side


def _explain_group(model: EmbeddingModel, group: list[LoadedPair], methods, sides, references, similarity: str,
                   device: str, seed: int) -> tuple[list[_SideView], list[LoadedPair]]:
    """The side views of the group's pairs (maps of every method and of the random reference, the gradient for the
    oracle), and the pairs left out for a degenerate embedding."""
    query = torch.stack([item.pixels["query"] for item in group])
    retrieved = torch.stack([item.pixels["retrieved"] for item in group])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate pairs are reported as errors by the caller
        explanation = explain_pair(model, model.preprocessing(query), model.preprocessing(retrieved), similarity)
    maps = method_maps(explanation, methods)
    gradients = (similarity_gradients(model, query.to(device), retrieved.to(device), similarity)
                 if GRADIENT_ORACLE in references else None)
    views, degenerate = [], []
    for b, item in enumerate(group):
        if bool(explanation.degenerate[b]):
            degenerate.append(item)
            continue
        for side in sides:
            other = "retrieved" if side == "query" else "query"
            size = (int(item.pixels[side].shape[-2]), int(item.pixels[side].shape[-1]))
            side_maps = {name: maps_at_image_size(maps[name][side][b], size) for name in methods}
            if RANDOM in references:
                rng = _stable_seed(seed, item.pair.pair_id, side, RANDOM)
                side_maps[RANDOM] = random_map(explanation.feature_size(side), size, rng)
            views.append(_SideView(item, side, item.pixels[side], explanation.embedding(other)[b].float().cpu(),
                                   side_maps, gradients[side][b].cpu() if gradients is not None else None))
    return views, degenerate


def _curve_jobs(views: list[_SideView], removal: Removal, orderings: tuple[str, ...], steps, seed: int,
                ranks_of: dict) -> Iterator[tuple[tuple, torch.Tensor]]:
    """Every perturbed image of the views: (key, image). Keys: (view key, "original" | "removed") for the two
    images every ordering shares, (view key, ordering, curve, step) for the others."""
    for view in views:
        rng = _stable_seed(seed, view.loaded.pair.pair_id, view.side, removal.name)
        yield (view.key, "original"), view.pixels
        full = removal.apply(view.pixels, np.ones(view.pixels.shape[-2:], dtype=bool), rng)[0]
        yield (view.key, "removed"), full
        n = view.pixels.shape[-2] * view.pixels.shape[-1]
        counts = step_counts(steps, n)
        for ordering in orderings:
            ranks = ranks_of[(view.key, ordering)].reshape(view.pixels.shape[-2:])
            inner = [(i, count) for i, count in enumerate(counts) if 0 < i < len(counts) - 1]
            if not inner:   # steps (0, 1): every ordering shares the two end points
                continue
            for curve in CURVES:
                masks = np.stack([(ranks < count) if curve == "deletion" else (ranks >= count) for _, count in inner])
                if REMOVALS[removal.name].per_mask:  # e.g. ROAD's sparse solve: one image at a time
                    for (i, _), mask in zip(inner, masks, strict=True):
                        yield (view.key, ordering, curve, i), removal.apply(view.pixels, mask, rng)[0]
                else:
                    images = removal.apply(view.pixels, masks, rng)
                    for (i, _), image in zip(inner, images, strict=True):
                        yield (view.key, ordering, curve, i), image


def _endpoint_key(view_key, curve: str, step: int, last: int):
    if (curve == "deletion" and step == 0) or (curve == "insertion" and step == last):
        return view_key, "original"
    if (curve == "deletion" and step == last) or (curve == "insertion" and step == 0):
        return view_key, "removed"
    return None


def evaluate_faithfulness(model: EmbeddingModel, pairs, methods=DEFAULT_METHODS, removals=tuple(REMOVALS),
                          steps=DEFAULT_STEPS, sides=SIDES, *, references=REFERENCE_ORDERINGS,
                          similarity: str = "cosine", batch_size: int = 128, explain_batch_size: int = 16,
                          device: str | None = None, seed: int = 0, blur_sigma: float = DEFAULT_BLUR_SIGMA,
                          road_noise: float = DEFAULT_ROAD_NOISE, stage: str = "faithfulness"):
    """Deletion and insertion curves of a shard of pairs; returns ``(rows, errors)``.

    ``pairs``: :class:`ImagePair` (or :class:`eml_core.retrieval.Pair`) objects.
    ``removals``: names from :data:`REMOVALS` (one name or several: the pairs are
    explained once for all). ``references``: any of :data:`REFERENCE_ORDERINGS`.
    ``batch_size`` images go through the model per forward (1 = one forward per
    image, the unbatched baseline); ``device`` is where inputs go (default: the
    model's device). Rows follow the ``faithfulness_curves``
    schema: one per (pair, side, method or reference, removal, curve, step). A
    pair with an unreadable image, a zero-norm embedding or a failed forward
    pass is left out with an ``errors`` record; the rest go on. Results do not
    depend on ``batch_size`` or on how pairs are sharded (seeds are per pair).
    """
    methods, sides = check_arguments(methods, sides, batch_size, similarity)
    removals = (removals,) if isinstance(removals, str) else tuple(removals)
    operators = [Removal(name, blur_sigma, road_noise) for name in removals]
    if not operators:
        raise ArgumentError("removals", f"name at least one of {', '.join(REMOVALS)}")
    steps = check_steps(steps)
    references = tuple(references)
    if any(name not in REFERENCE_ORDERINGS for name in references):
        raise ArgumentError("references", f"expected some of {REFERENCE_ORDERINGS}, got {references}")
    orderings = methods + references
    device = device or str(model_device(model))
    pairs = as_image_pairs(pairs)
    errors: list[ErrorRecord] = []
    rows: list[dict] = []
    loaded = load_pair_pixels(model, pairs, stage, errors)
    with inference_mode_of(model):
        for group in stackable_groups(loaded, explain_batch_size):
            try:
                views, degenerate = _explain_group(model, group, methods, sides, references, similarity, device, seed)
            except (EmlError, RuntimeError) as error:
                for item in group:
                    errors.append(ErrorRecord(stage, item.pair.pair_id, None, None, f"explanation failed: {error}"))
                continue
            for item in degenerate:
                errors.append(ErrorRecord(stage, item.pair.pair_id, None, None,
                                          "pair left out: an embedding has zero norm or is not finite, so "
                                          "its similarity is undefined"))
            for removal in operators:
                ranks_of = {}
                for view in views:
                    view_maps = dict(view.maps)
                    if GRADIENT_ORACLE in references:
                        assert view.gradient is not None  # computed whenever the oracle is asked for
                        view_maps[GRADIENT_ORACLE] = gradient_oracle_map(view.pixels, view.gradient,
                                                                         removal.fully_removed(view.pixels))
                    for ordering in orderings:
                        # the same tie-breaking draws for every removal: orderings differ only where maps do
                        rng = _stable_seed(seed, view.loaded.pair.pair_id, view.side, "ties", ordering)
                        ranks_of[(view.key, ordering)] = pixel_ranks(view_maps[ordering], rng)
                failed: dict = {}
                embeddings = _embed_lazily(model, _curve_jobs(views, removal, orderings, steps, seed, ranks_of),
                                           batch_size, device, failed)
                rows.extend(_curve_rows(views, removal.name, orderings, steps, embeddings, failed, similarity,
                                        stage, errors))
    return rows, errors


def _curve_rows(views, removal: str, orderings, steps, embeddings: dict, failed: dict, similarity: str, stage: str,
                errors: list[ErrorRecord]) -> list[dict]:
    rows = []
    broken: dict[int, str] = {}
    for key, message in failed.items():
        broken.setdefault(key[0][0], message)
    last = len(steps) - 1
    for view in views:
        index = view.loaded.index
        if index in broken:
            continue
        for ordering in orderings:
            for curve in CURVES:
                keys = [_endpoint_key(view.key, curve, i, last) or (view.key, ordering, curve, i)
                        for i in range(len(steps))]
                values = _similarity(torch.stack([embeddings[k] for k in keys]), view.partner, similarity)
                for i, value in enumerate(values.tolist()):
                    rows.append({"pair_id": view.loaded.pair.pair_id, "side": view.side, "method": ordering,
                                 "removal": removal, "curve": curve, "step": i, "fraction": steps[i],
                                 "similarity": float(value)})
    reported = set()
    for view in views:
        index = view.loaded.index
        if index in broken and index not in reported:
            reported.add(index)
            errors.append(ErrorRecord(stage, view.loaded.pair.pair_id, None, None,
                                      f"pair left out of the {removal} curves: {broken[index]}"))
    return rows


# ---------------------------------------------------------------------------------------------
# point-specific faithfulness


def point_methods(methods=None) -> tuple[str, ...]:
    """The named methods (default: all registered) that have point-specific maps."""
    names = tuple(methods) if methods else tuple(REGISTRY)
    return tuple(name for name in names if get_method(name).point_maps is not None)


def _top_region(values: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    count = max(1, step_counts([fraction], values.size)[0])
    return (pixel_ranks(values, rng) < count).reshape(values.shape)


def _cell_centres(cells: torch.Tensor, feature_size: tuple[int, int], image_size: tuple[int, int]) -> list:
    """Pixel points (x, y) whose bilinear sample is exactly the feature cell's value (half-pixel centres)."""
    h, w = feature_size
    height, width = image_size
    return [((int(c) % w + 0.5) * width / w - 0.5, (int(c) // w + 0.5) * height / h - 0.5) for c in cells]


def evaluate_point_faithfulness(model: EmbeddingModel, pairs, methods=None, removal: str = "blur", *,
                                side: str = "query", points_per_pair: int = 3, region_fraction: float = 0.1,
                                random_regions: int = 4, similarity: str = "cosine", batch_size: int = 128,
                                explain_batch_size: int = 16, device: str | None = None, seed: int = 0,
                                blur_sigma: float = DEFAULT_BLUR_SIGMA, road_noise: float = DEFAULT_ROAD_NOISE,
                                stage: str = "point_faithfulness"):
    """Point-specific faithfulness of a shard of pairs; returns ``(rows, errors)`` (``faithfulness_points``).

    For each pair, the ``points_per_pair`` pixels of ``side`` at the centres of
    its feature cells with the largest partial similarity; for each method of
    ``methods`` with point-specific maps (all such registered methods by
    default; others are skipped): the drop of the pixel's partial similarity
    when the top ``region_fraction`` of its point-specific map is removed from
    the other image, the mean drop over ``random_regions`` random regions of the
    same area, and the drop for the top region of the method's overall map.
    """
    chosen = point_methods(methods)
    check_arguments(chosen or DEFAULT_METHODS, (side,), batch_size, similarity)
    operator = Removal(removal, blur_sigma, road_noise)
    if not 0 < region_fraction < 1:
        raise ArgumentError("region_fraction", f"must be in (0, 1), got {region_fraction}")
    for name, value in (("points_per_pair", points_per_pair), ("random_regions", random_regions)):
        if not isinstance(value, int) or value < 1:
            raise ArgumentError(name, f"must be a positive whole number, got {value!r}")
    other = "retrieved" if side == "query" else "query"
    device = device or str(model_device(model))
    pairs = as_image_pairs(pairs)
    errors: list[ErrorRecord] = []
    rows: list[dict] = []
    if not chosen:
        return rows, errors
    loaded = load_pair_pixels(model, pairs, stage, errors)
    with inference_mode_of(model):
        for group in stackable_groups(loaded, explain_batch_size):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    query = model.preprocessing(torch.stack([i.pixels["query"] for i in group]))
                    retrieved = model.preprocessing(torch.stack([i.pixels["retrieved"] for i in group]))
                    explanation = explain_pair(model, query, retrieved, similarity)
                plans = _point_plans(explanation, group, chosen, side, other, points_per_pair, region_fraction,
                                     random_regions, seed)
            except (EmlError, RuntimeError) as error:
                for item in group:
                    errors.append(ErrorRecord(stage, item.pair.pair_id, None, None, f"explanation failed: {error}"))
                continue
            for item, plan in zip(group, plans, strict=True):
                if plan is None:
                    errors.append(ErrorRecord(stage, item.pair.pair_id, None, None,
                                              "pair left out: an embedding has zero norm or is not finite"))
            plans = [p for p in plans if p is not None]
            failed: dict = {}
            embeddings = _embed_lazily(model, _point_jobs(plans, operator, seed), batch_size, device, failed)
            broken = {key[0] for key in failed}
            for plan in plans:
                if plan["index"] in broken:
                    problem = failed[next(k for k in failed if k[0] == plan["index"])]
                    errors.append(ErrorRecord(stage, plan["pair_id"], None, None, f"pair left out: {problem}"))
                    continue
                rows.extend(_point_rows(plan, embeddings, operator.name, side, region_fraction, similarity))
    return rows, errors


def _point_plans(explanation, group, methods, side, other, points_per_pair, region_fraction, random_regions, seed):
    """Per pair: the points, their partial embeddings and every region to remove from the other image."""
    own = explanation.query if side == "query" else explanation.retrieved
    partial = explanation.overall(side, bias=True)  # s at every cell centre of `side`
    k = min(points_per_pair, partial.shape[-2] * partial.shape[-1])
    size_own = tuple(group[0].pixels[side].shape[-2:])
    size_other = tuple(group[0].pixels[other].shape[-2:])
    points = []
    for b in range(len(group)):
        cells = torch.topk(partial[b].flatten(), k).indices
        points.extend(_cell_centres(cells, own.feature_size, size_own))
    point_maps = method_point_maps(explanation, side, points, methods)   # (B, B*k, h, w)
    overall = method_maps(explanation, methods)
    f = explanation.partial_embedding(side, points_xy=points)             # (B, B*k, l)
    plans: list[dict | None] = []
    for b, item in enumerate(group):
        if bool(explanation.degenerate[b]):
            plans.append(None)
            continue
        rng = _stable_seed(seed, item.pair.pair_id, side, "points")
        mine = slice(b * k, (b + 1) * k)
        regions: dict[tuple[str, int | str], np.ndarray] = {}
        for name in methods:
            for j, values in enumerate(maps_at_image_size(point_maps[name][b, mine], size_other)):
                regions[(name, j)] = _top_region(values, region_fraction, rng)
            regions[(name, "overall")] = _top_region(maps_at_image_size(overall[name][other][b], size_other),
                                                     region_fraction, rng)
        for n in range(random_regions):
            regions[(RANDOM, n)] = _top_region(random_map(explanation.feature_size(other), size_other, rng),
                                               region_fraction, rng)
        plans.append({"index": item.index, "pair_id": item.pair.pair_id, "pixels": item.pixels[other],
                      "points": points[mine], "f": f[b, mine].float().cpu(),
                      "own_embedding": own.embedding[b].float().cpu(), "regions": regions,
                      "methods": methods, "random_regions": random_regions})
    return plans


def _point_jobs(plans, operator: Removal, seed: int):
    for plan in plans:
        rng = _stable_seed(seed, plan["pair_id"], operator.name, "point-regions")
        yield (plan["index"], "original"), plan["pixels"]
        for region, mask in plan["regions"].items():
            yield (plan["index"], region), operator.apply(plan["pixels"], mask, rng)[0]


def _point_rows(plan, embeddings, removal: str, side: str, region_fraction: float, similarity: str) -> list[dict]:
    index = plan["index"]

    def partial(key) -> torch.Tensor:   # s for each of the k points against one embedding of the other image
        return partial_similarity(plan["f"].unsqueeze(0), plan["own_embedding"].unsqueeze(0),
                                  embeddings[(index, key)].unsqueeze(0), similarity)[0, :, 0]

    before = partial("original")
    random_drop = torch.stack([before - partial((RANDOM, n)) for n in range(plan["random_regions"])]).mean(0)
    rows = []
    for name in plan["methods"]:
        overall_drop = before - partial((name, "overall"))
        for j, (x, y) in enumerate(plan["points"]):
            top_drop = before[j] - partial((name, j))[j]
            rows.append({"pair_id": plan["pair_id"], "side": side, "method": name, "removal": removal, "point": j,
                         "point_x": float(x), "point_y": float(y), "region_fraction": float(region_fraction),
                         "partial_similarity": float(before[j]), "drop_top": float(top_drop),
                         "drop_random": float(random_drop[j]), "drop_overall": float(overall_drop[j])})
    return rows


# ---------------------------------------------------------------------------------------------
# summaries


def area_under_curve(fractions, values) -> float:
    """Trapezoid rule over the fractions: sum_k (f_k - f_{k-1}) (c_k + c_{k-1}) / 2."""
    f = np.asarray(fractions, dtype=np.float64)
    c = np.asarray(values, dtype=np.float64)
    return float(np.sum(np.diff(f) * (c[1:] + c[:-1]) / 2))


def curve_areas(curve_rows) -> pd.DataFrame:
    """AUC of every curve: columns pair_id, side, method, removal, curve, auc."""
    import pandas as pd

    data = pd.DataFrame(curve_rows)
    keys = ["pair_id", "side", "method", "removal", "curve"]
    if data.empty:
        return pd.DataFrame(columns=[*keys, "auc"])
    data = data.sort_values([*keys, "fraction"])
    areas = data.groupby(keys, sort=False).apply(
        lambda g: area_under_curve(g["fraction"].to_numpy(), g["similarity"].to_numpy()), include_groups=False)
    return areas.rename("auc").reset_index()


def bootstrap_interval(samples, statistic, confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic(*samples, axis=-1)`` over the units of ``samples`` (arrays of
    equal length, resampled together), with scipy.stats.bootstrap; NaN for fewer than 2 units."""
    from scipy.stats import bootstrap

    samples = tuple(np.asarray(s, dtype=np.float64) for s in samples)
    if len(samples[0]) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate samples (all equal) give a zero-width interval
        result = bootstrap(samples, statistic, n_resamples=resamples, confidence_level=confidence,
                           method="percentile", paired=len(samples) > 1, vectorized=True, axis=-1,
                           rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_statistic(values, axis=-1):
    return np.mean(values, axis=axis)


def _ratio_of_sums(top, random, axis=-1):
    denominator = np.sum(random, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, np.sum(top, axis=axis) / denominator, np.nan)


def summarise_faithfulness(curve_rows, point_rows=(), confidence: float = 0.95, resamples: int = 2000,
                           seed: int = 0) -> list[dict]:
    """``faithfulness_summary`` rows: per (removal, method), mean deletion and insertion AUC over pairs and the
    point-specific ratio, each with a percentile-bootstrap interval over pairs.

    A pair's AUC is the mean over its evaluated sides. The point ratio is
    sum(drop_top) / sum(drop_random) over every point of every pair (a ratio of
    means; NaN when the random drops do not sum to a positive number), resampled
    by pair; ``point_ratio_vs_overall`` is sum(drop_top) / sum(drop_overall).
    """
    import pandas as pd

    areas = curve_areas(curve_rows)
    points = pd.DataFrame(point_rows)
    out: dict[tuple[str, str], dict] = {}

    def row(removal: str, method: str) -> dict:
        key = (removal, method)
        if key not in out:
            out[key] = {"removal": removal, "method": method, "reference": method in REFERENCE_ORDERINGS,
                        "pairs": 0, "point_pairs": 0, "confidence": confidence,
                        **{f"{measure}{part}": float("nan") for measure in ("deletion_auc", "insertion_auc",
                                                                           "point_ratio")
                           for part in ("", "_low", "_high")}, "point_ratio_vs_overall": float("nan")}
        return out[key]

    if not areas.empty:
        per_pair = areas.groupby(["removal", "method", "curve", "pair_id"], sort=False)["auc"].mean().reset_index()
        for (removal, method, curve), group in per_pair.groupby(["removal", "method", "curve"], sort=False):
            values = group["auc"].to_numpy()
            target = row(removal, method)
            target["pairs"] = max(target["pairs"], len(values))
            target[f"{curve}_auc"] = float(values.mean())
            low, high = bootstrap_interval((values,), mean_statistic, confidence, resamples, seed)
            target[f"{curve}_auc_low"], target[f"{curve}_auc_high"] = low, high
    if not points.empty:
        sums = points.groupby(["removal", "method", "pair_id"], sort=False)[
            ["drop_top", "drop_random", "drop_overall"]].sum().reset_index()
        for (removal, method), group in sums.groupby(["removal", "method"], sort=False):
            top, random, overall = (group[c].to_numpy() for c in ("drop_top", "drop_random", "drop_overall"))
            target = row(removal, method)
            target["point_pairs"] = len(group)
            target["point_ratio"] = float(_ratio_of_sums(top, random))
            target["point_ratio_vs_overall"] = float(_ratio_of_sums(top, overall))
            low, high = bootstrap_interval((top, random), _ratio_of_sums, confidence, resamples, seed)
            target["point_ratio_low"], target["point_ratio_high"] = low, high
    return list(out.values())


# (measure, direction): which way is more faithful
FAITHFULNESS_MEASURES = (("deletion_auc", "lower"), ("insertion_auc", "higher"), ("point_ratio", "higher"))


def most_faithful(summary_rows) -> list[dict]:
    """Per removal and measure, the map method (references excluded) that is most faithful:
    rows ``{measure, direction, removal, method, value}``; methods with no value for a measure are skipped."""
    best: dict[tuple[str, str], dict] = {}
    for summary in summary_rows:
        if summary["reference"]:
            continue
        for measure, direction in FAITHFULNESS_MEASURES:
            value = summary[measure]
            if value is None or not math.isfinite(value):
                continue
            key = (measure, summary["removal"])
            current = best.get(key)
            better = current is None or (value < current["value"] if direction == "lower" else value > current["value"])
            if better:
                best[key] = {"measure": measure, "direction": direction, "removal": summary["removal"],
                             "method": summary["method"], "value": float(value)}
    return list(best.values())
