r"""Interactive retrieval by region (paper Section VII-B, Figs. 10, 13-15, 18).

A user marks a region of interest in a query image q (a point or a box, in
pixels of the original image) and the gallery is ranked by that region's
contribution to the similarity, with no re-training and the gallery's stored
embeddings reused (:mod:`eml_core.gallery_index`). With position embeddings
``E_q = sum_p F_p + B_q`` (:mod:`eml_core.position_embeddings`) the **partial
similarity** of the region to gallery image g is

.. math::  s(g) = \frac{f \cdot E_g}{\lVert E_q\rVert\,\lVert E_g\rVert}

(``f . E_g`` for "no norm" models), where the region feature ``f`` is

* ``centre`` (the paper's rule): F bilinearly sampled at the region's centre
  pixel (half-pixel centres, edge clamp; :mod:`eml_core.sampling`). A point
  region is its own centre; a box (x0, y0, x1, y1), corners on pixel edges, has
  its centre at pixel coordinate ((x0 + x1)/2 - 0.5, (y0 + y1)/2 - 0.5);
* ``box_mean`` (an option): the mean of the bilinear samples of F at the
  centres of the pixels the box covers.

Ranking methods (:data:`RETRIEVAL_METHODS`; every output names the method and its
region feature):

==================  ==================  ======================================================
method              region_feature      query vector v (scores = v . E_hat_g)
==================  ==================  ======================================================
partial_centre      centre              f_centre / |E_q|
partial_box_mean    box_mean            f_box / |E_q|             (box regions only)
overall             whole_image         E_q / |E_q|               (ordinary retrieval)
crop                crop                E(crop) / |E(crop)|: the box cropped and resized to
                                        the network input, embedded (paper baseline; boxes)
mask                mask                E(mask) / |E(mask)|: everything outside the box set
                                        to the mean colour, embedded (paper baseline; boxes)
==================  ==================  ======================================================

The mean colour is the pixel the model's preprocessing maps to zero (its
normalisation mean, e.g. the ImageNet mean), i.e. "no information".

**What the whole-image box mean gives.** With uniform sampling weights (an image
whose size is a whole multiple of the feature grid) ``f_box = (E_q - B_q)/(hw)``,
so ``partial_box_mean`` over the whole image ranks by ``(E_q - B_q) . E_hat_g``.
Heads without a bias term (``gap``, ``gmp``: ``B_q = 0``) therefore reproduce the
overall ranking exactly (scores scaled by 1/(hw)); heads with one (``gap_fc``,
``gmp_fc``, ``gap_bn``, ``flatten_fc_bn``, ``gap_fc_relu_fc``) rank by the
embedding minus its bias, which is the overall ranking only when that bias is 0.
For other image sizes the weights are only nearly uniform.

**Cost.** A query costs one backbone pass for the image (which gives E_q and
every F_p, hence every partial and the overall vector) plus one per baseline
(crop, mask), and one matrix-vector product per method with the normalised
gallery: no model call per gallery image.

**Point-specific maps on retrieved images** (Fig. 13's failure analysis):
:func:`region_point_specific_maps` gives ``M_g[x] = f . F^g_x / (|E_q| |E_g|)``
over a retrieved image g; ``sum_x M_g[x] + f . B_g / (|E_q||E_g|) = s(g)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd
import torch

from eml_core.batches import equal_shape_batches
from eml_core.datasets import ErrorRecord
from eml_core.errors import ArgumentError, EmlError, ImageError
from eml_core.feature_maps import compute_feature_map
from eml_core.gallery_index import GalleryIndex
from eml_core.images import load_image
from eml_core.models import EmbeddingModel, inference_mode_of
from eml_core.position_embeddings import position_embeddings
from eml_core.presentation import normalised_at_image_size, overlay
from eml_core.sampling import box_weights, point_weights

REGION_KINDS = ("point", "box")


# ---------------------------------------------------------------------------------------------
# queries


@dataclass(frozen=True)
class Region:
    """A point ``(x, y)`` (pixel coordinates: pixel u spans [u, u + 1)) or a box ``(x0, y0, x1, y1)`` (pixel edges),
    in the original query image. A point is stored as ``x0 = x1 = x``, ``y0 = y1 = y``."""

    kind: str
    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def point(cls, x: float, y: float) -> Region:
        return cls("point", float(x), float(y), float(x), float(y))

    @classmethod
    def box(cls, x0: float, y0: float, x1: float, y1: float) -> Region:
        return cls("box", float(x0), float(y0), float(x1), float(y1))

    @property
    def centre_xy(self) -> tuple[float, float]:
        """The centre pixel (the paper's region feature samples F there)."""
        if self.kind == "point":
            return self.x0, self.y0
        return (self.x0 + self.x1) / 2 - 0.5, (self.y0 + self.y1) / 2 - 0.5

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1

    def check(self, image_size: tuple[int, int], source: str) -> None:
        """Raise :class:`ArgumentError` (naming ``source``) for a region outside the image, empty, or not finite."""
        height, width = image_size
        values = (self.x0, self.y0, self.x1, self.y1)
        if self.kind not in REGION_KINDS:
            raise ArgumentError(source, f"region kind must be 'point' or 'box', got {self.kind!r}")
        if not all(math.isfinite(v) for v in values):
            raise ArgumentError(source, f"region {values} has a non-finite coordinate")
        if self.kind == "point":
            if not (0 <= self.x0 < width and 0 <= self.y0 < height):
                raise ArgumentError(source, f"point ({self.x0:g}, {self.y0:g}) is outside the {width}x{height} image "
                                            f"(x must be in [0, {width}), y in [0, {height}))")
            return
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ArgumentError(source, f"box ({self.x0:g}, {self.y0:g}, {self.x1:g}, {self.y1:g}) is empty "
                                        f"(needs x0 < x1 and y0 < y1)")
        if self.x0 < 0 or self.y0 < 0 or self.x1 > width or self.y1 > height:
            raise ArgumentError(source, f"box ({self.x0:g}, {self.y0:g}, {self.x1:g}, {self.y1:g}) is not inside the "
                                        f"{width}x{height} image (needs 0 <= x0 < x1 <= {width}, "
                                        f"0 <= y0 < y1 <= {height})")


def centre_inside(region: Region, image_size: tuple[int, int]) -> tuple[float, float]:
    """The region's centre pixel, kept inside the image (a box under one pixel wide at the border has its centre
    half a pixel outside: it samples the border pixel, as the bilinear edge clamp would anyway)."""
    height, width = image_size
    x, y = region.centre_xy
    return min(max(x, 0.0), math.nextafter(width, 0)), min(max(y, 0.0), math.nextafter(height, 0))


@dataclass(frozen=True)
class RegionQuery:
    """A query image file with its region. ``exclude_gallery_ids`` are never returned (the gallery entry of the
    query's own file is excluded anyway, by path)."""

    query_id: str
    image: str
    region: Region
    label: int | None = None
    exclude_gallery_ids: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# methods


@dataclass(frozen=True)
class RetrievalMethod:
    name: str             # as in results tables
    region_feature: str   # how the query vector is made (column region_feature)
    paper_name: str
    needs_box: bool       # only defined for box regions
    image: str            # which image the backbone sees: "query", "crop" or "mask"
    description: str


RETRIEVAL_METHODS: dict[str, RetrievalMethod] = {m.name: m for m in (
    RetrievalMethod("partial_centre", "centre", "Partial similarity (ours)", False, "query",
                    "f . E_g / (|E_q| |E_g|), f = F of the query bilinearly sampled at the region's centre pixel"),
    RetrievalMethod("partial_box_mean", "box_mean", "Partial similarity, box mean", True, "query",
                    "f . E_g / (|E_q| |E_g|), f = mean of F's bilinear samples over the box's pixels"),
    RetrievalMethod("overall", "whole_image", "Overall similarity", False, "query",
                    "E_q . E_g / (|E_q| |E_g|): ordinary retrieval, the region ignored"),
    RetrievalMethod("crop", "crop", "Crop and resize", True, "crop",
                    "cosine of E(box cropped and resized to the input) with E_g"),
    RetrievalMethod("mask", "mask", "Mask", True, "mask",
                    "cosine of E(image with everything outside the box set to the mean colour) with E_g"),
)}
DEFAULT_METHODS: tuple[str, ...] = tuple(RETRIEVAL_METHODS)


def check_methods(methods) -> tuple[str, ...]:
    methods = tuple(methods)
    unknown = [m for m in methods if m not in RETRIEVAL_METHODS]
    if unknown or not methods:
        raise ArgumentError("methods", f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
                                       f"{', '.join(RETRIEVAL_METHODS)}")
    return methods


# ---------------------------------------------------------------------------------------------
# the query side: one backbone pass per image


def mean_colour(model: EmbeddingModel) -> torch.Tensor:
    """The RGB pixel in [0, 1] that the model's preprocessing maps to zero (its normalisation mean), ``(3,)``."""
    prep = model.preprocessing
    mean = torch.tensor(prep.mean, dtype=torch.float32) / float(prep.scale)
    if prep.channel_order == "BGR":
        mean = mean.flip(0)
    return mean.clamp(0, 1)


def _pixel_span(start: float, stop: float, extent: int) -> tuple[int, int]:
    """Pixels whose centres the edge interval [start, stop) covers; at least the one holding its midpoint."""
    first, last = math.ceil(start - 0.5), math.floor(stop - 0.5)
    if last < first:
        first = last = min(extent - 1, max(0, math.floor((start + stop) / 2)))
    return max(0, first), min(extent, last + 1)


def crop_pixels(pixels: torch.Tensor, region: Region) -> torch.Tensor:
    """The box of ``(3, H, W)`` pixels: every pixel the box touches (edges rounded outwards)."""
    _, height, width = pixels.shape
    x0, x1 = max(0, math.floor(region.x0)), min(width, math.ceil(region.x1))
    y0, y1 = max(0, math.floor(region.y0)), min(height, math.ceil(region.y1))
    return pixels[:, y0:y1, x0:x1]


def mask_pixels(pixels: torch.Tensor, region: Region, fill: torch.Tensor) -> torch.Tensor:
    """``pixels`` with every pixel whose centre lies outside the box set to ``fill`` (3,)."""
    _, height, width = pixels.shape
    c0, c1 = _pixel_span(region.x0, region.x1, width)
    r0, r1 = _pixel_span(region.y0, region.y1, height)
    out = fill.to(pixels).view(3, 1, 1).expand_as(pixels).clone()
    out[:, r0:r1, c0:c1] = pixels[:, r0:r1, c0:c1]
    return out


@dataclass
class QueryVectors:
    """The query side of retrieval: one vector per method, ready for ``v . E_hat_g``."""

    query: RegionQuery
    image_size: tuple[int, int]           # (height, width) of the original query image
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (l,) float32


def _scaled(vector: torch.Tensor, norm: torch.Tensor, similarity: str) -> torch.Tensor:
    """``vector / norm`` for cosine (0 for a zero-norm embedding), ``vector`` for dot."""
    if similarity == "dot":
        return vector
    return vector / norm if float(norm) > 0 else torch.zeros_like(vector)


def query_vectors(model: EmbeddingModel, queries: list[RegionQuery], methods=DEFAULT_METHODS,
                  similarity: str = "cosine", device: str = "cpu", batch_size: int = 16,
                  stage: str = "retrieve") -> tuple[list[QueryVectors], list[ErrorRecord]]:
    """Query vectors of every method for every query; unusable queries and methods become error rows.

    A missing or unreadable query file, or a region outside the image or empty,
    leaves that query out (``error``); a box-only method asked of a point region
    leaves that method out for the query (``warning``); a crop too small for the
    backbone leaves out that method (``error``). Model calls: one backbone pass
    per image (query, crop, mask), batched by input shape.
    """
    methods = check_methods(methods)
    errors: list[ErrorRecord] = []
    results: list[QueryVectors] = []
    jobs: list[tuple[int, str, torch.Tensor]] = []  # (result index, image kind, network input)
    fill = mean_colour(model)
    for query in queries:
        try:
            image = load_image(query.image)
            query.region.check(image.size, f"query {query.query_id} region")
        except EmlError as error:
            errors.append(ErrorRecord(stage, query.query_id, query.image, None, f"{error}; query left out"))
            continue
        kinds = []
        for name in methods:
            method = RETRIEVAL_METHODS[name]
            if method.needs_box and query.region.kind != "box":
                errors.append(ErrorRecord(stage, query.query_id, query.image, None,
                                          f"method {name} needs a box region, the query has a point; method left "
                                          f"out for this query", "warning"))
                continue
            if method.image not in kinds:
                kinds.append(method.image)
        inputs = {}
        for kind in kinds:
            if kind == "query":
                pixels = image.pixels
            elif kind == "crop":
                pixels = crop_pixels(image.pixels, query.region)
            else:
                pixels = mask_pixels(image.pixels, query.region, fill)
            tensor = model.preprocessing(pixels)
            try:
                model.check_input_size(tensor.shape[-2], tensor.shape[-1], f"{query.image} ({kind})")
            except ImageError as error:
                errors.append(ErrorRecord(stage, query.query_id, query.image, None, str(error)))
                continue
            inputs[kind] = tensor
        if "query" in kinds and "query" not in inputs:
            continue  # the image itself is unusable: reported above
        results.append(QueryVectors(query, image.size))
        jobs.extend((len(results) - 1, kind, tensor) for kind, tensor in inputs.items())

    outputs: dict[tuple[int, str], tuple] = {}
    shapes: dict[tuple, list[int]] = {}
    for n, (_, _, tensor) in enumerate(jobs):
        shapes.setdefault(tuple(tensor.shape), []).append(n)
    with inference_mode_of(model), torch.no_grad():
        for members in shapes.values():
            for start, batch in equal_shape_batches([jobs[n][2] for n in members], batch_size):
                chosen = members[start:start + len(batch)]
                feature_map = compute_feature_map(model, batch.to(device), "query")
                full = [i for i, n in enumerate(chosen) if jobs[n][1] == "query"]
                other = [i for i, n in enumerate(chosen) if jobs[n][1] != "query"]
                if full:
                    pe = position_embeddings(model.head, feature_map[full])
                    for row, i in enumerate(full):
                        outputs[(jobs[chosen[i]][0], "query")] = (pe.features[row], pe.embedding[row], pe.feature_size)
                if other:
                    embeddings = model.head(feature_map[other])
                    for row, i in enumerate(other):
                        outputs[(jobs[chosen[i]][0], jobs[chosen[i]][1])] = (None, embeddings[row], None)

    for index, result in enumerate(results):
        region = result.query.region
        for name in methods:
            method = RETRIEVAL_METHODS[name]
            if (method.needs_box and region.kind != "box") or (index, method.image) not in outputs:
                continue  # reported above
            features, embedding, feature_size = outputs[(index, method.image)]
            norm = embedding.norm()
            if name == "partial_centre":
                weights = point_weights([centre_inside(region, result.image_size)], result.image_size, feature_size)
            elif name == "partial_box_mean":
                weights = box_weights([region.box_xyxy], result.image_size, feature_size)
            else:
                weights = None
            vector = embedding if weights is None else (weights.to(features) @ features)[0]
            if not torch.isfinite(vector).all():
                errors.append(ErrorRecord(stage, result.query.query_id, result.query.image, None,
                                          f"method {name}: the query vector is not finite; method left out"))
                continue
            result.vectors[name] = _scaled(vector, norm, similarity).float().cpu().numpy()
    return results, errors


# ---------------------------------------------------------------------------------------------
# rankings


def _exclusions(index: GalleryIndex, queries: list[QueryVectors], root=None) -> list[set[int]]:
    """Per query, the gallery rows never to return: its own file, and the ids it excludes."""
    by_id = index.positions("image_id")
    out = []
    for qv in queries:
        excluded = set(index.position_of_file(qv.query.image, root))
        for image_id in qv.query.exclude_gallery_ids:
            excluded.update(by_id.get(image_id, []))
        out.append(excluded)
    return out


def _region_columns(query: RegionQuery) -> dict:
    r = query.region
    return {"query_id": query.query_id, "query_image": query.image, "query_label": query.label,
            "region_kind": r.kind, "box_x0": r.x0, "box_y0": r.y0, "box_x1": r.x1, "box_y1": r.y1}


def rank_queries(model: EmbeddingModel, index: GalleryIndex, queries: list[RegionQuery], methods=DEFAULT_METHODS,
                 top_k: int = 10, device: str = "cpu", batch_size: int = 16, root=None,
                 stage: str = "retrieve") -> tuple[list[dict], list[ErrorRecord]]:
    """Rank the index for a shard of queries by every method; returns ``(retrieval_rankings rows, errors)``.

    The model must be the one the index was built with
    (:class:`~eml_core.gallery_index.IndexModelMismatchError` otherwise). Each
    query costs its own backbone passes (:func:`query_vectors`) and one
    matrix-vector product per method with the stored gallery. The query's own
    image, when the gallery holds it, is never a result.
    """
    if top_k < 1:
        raise ArgumentError("top_k", f"must be at least 1, got {top_k}")
    index.check_model(model)
    vectors, errors = query_vectors(model, queries, methods, index.similarity, device, batch_size, stage)
    return rankings_from_vectors(index, vectors, methods, top_k, device, root), errors


def rankings_from_vectors(index: GalleryIndex, vectors: list[QueryVectors], methods=DEFAULT_METHODS, top_k: int = 10,
                          device: str = "cpu", root=None) -> list[dict]:
    """``retrieval_rankings`` rows of the top ``top_k`` gallery images of each query vector (no model call)."""
    if not vectors or len(index) == 0:
        return []
    keys = [(q, name) for q, qv in enumerate(vectors) for name in check_methods(methods) if name in qv.vectors]
    if not keys:
        return []
    paths = index.image_paths(root)
    gallery = index.rows
    excluded = _exclusions(index, vectors, root)
    matrix = np.stack([vectors[q].vectors[name] for q, name in keys])
    scores, indices = index.searcher(device).search(matrix, top_k, [excluded[q] for q, _ in keys])
    rows = []
    for (q, name), row_scores, row_indices in zip(keys, scores, indices, strict=False):
        base = _region_columns(vectors[q].query)
        for rank, (score, g) in enumerate(zip(row_scores, row_indices, strict=False), start=1):
            if g < 0:
                break
            rows.append({**base, "method": name, "region_feature": RETRIEVAL_METHODS[name].region_feature,
                         "rank": rank, "gallery_id": gallery["image_id"].iat[g], "gallery_image": paths[g],
                         "gallery_relative_path": gallery["relative_path"].iat[g],
                         "gallery_label": int(gallery["label"].iat[g]), "score": float(score)})
    return rows


# ---------------------------------------------------------------------------------------------
# point-specific maps on retrieved images (Fig. 13)


@dataclass
class RetrievedMap:
    """The query region's point-specific map over one retrieved image (raw, signed, feature resolution)."""

    image: str
    raw_map: torch.Tensor       # (h, w): f . F^g_x / Z
    score: float                # s(g) = f . E_g / Z, the partial similarity
    bias_term: float            # f . B_g / Z, so raw_map.sum() + bias_term == score
    image_size: tuple[int, int]


def region_point_specific_maps(model: EmbeddingModel, query: RegionQuery, gallery_images: list[str],
                               region_feature: str = "centre", similarity: str = "cosine",
                               device: str = "cpu") -> list[RetrievedMap]:
    """Point-specific maps of the query region on each given image (one backbone pass per image shown).

    ``region_feature`` ``centre`` (the paper) or ``box_mean``. Bad input raises
    (:class:`~eml_core.errors.ImageError`, :class:`~eml_core.errors.ArgumentError`): this serves one query at a time.
    """
    if region_feature not in ("centre", "box_mean"):
        raise ArgumentError("region_feature", f"expected 'centre' or 'box_mean', got {region_feature!r}")
    if region_feature == "box_mean" and query.region.kind != "box":
        raise ArgumentError("region_feature", "box_mean needs a box region")
    image = load_image(query.image)
    query.region.check(image.size, f"query {query.query_id} region")
    out = []
    with inference_mode_of(model), torch.no_grad():
        q = model.preprocessing(image.pixels).unsqueeze(0).to(device)
        pe_q = position_embeddings(model.head, compute_feature_map(model, q, query.image))
        if region_feature == "centre":
            weights = point_weights([centre_inside(query.region, image.size)], image.size, pe_q.feature_size)
        else:
            weights = box_weights([query.region.box_xyxy], image.size, pe_q.feature_size)
        f = (weights.to(pe_q.features) @ pe_q.features[0])[0]
        norm_q = pe_q.embedding[0].norm()
        for path in gallery_images:
            loaded = load_image(path)
            g = model.preprocessing(loaded.pixels).unsqueeze(0).to(device)
            pe_g = position_embeddings(model.head, compute_feature_map(model, g, path))
            z = norm_q * pe_g.embedding[0].norm() if similarity == "cosine" else torch.ones((), device=f.device)
            z = z if float(z) > 0 else torch.full_like(z, float("inf"))  # degenerate: every value 0
            raw = (pe_g.features[0] @ f / z).view(*pe_g.feature_size)
            out.append(RetrievedMap(path, raw.cpu(), float(pe_g.embedding[0] @ f / z), float(pe_g.bias[0] @ f / z),
                                    loaded.size))
    return out


# ---------------------------------------------------------------------------------------------
# montages (paper layout; stimuli for human studies)

BOX_COLOUR = (255, 40, 40)
LABEL_WIDTH = 170


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    interpolation = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def draw_region(image_rgb: np.ndarray, region: Region) -> np.ndarray:
    """The image with the region drawn: a red box, or a red ring around a point."""
    out = np.ascontiguousarray(image_rgb.copy())
    thickness = max(2, round(min(out.shape[:2]) / 100))
    if region.kind == "box":
        x0, y0, x1, y1 = (round(v) for v in region.box_xyxy)
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), BOX_COLOUR, thickness)
    else:
        radius = max(4, round(min(out.shape[:2]) / 25))
        cv2.circle(out, (round(region.x0), round(region.y0)), radius, BOX_COLOUR, thickness)
    return out


def montage(query_image: str, region: Region, rows: list[tuple[str | None, list[str]]],
            heatmaps: list[list[np.ndarray | None]] | None = None, tile: int = 128, show_labels: bool = True,
            gap: int = 6) -> np.ndarray:
    """The paper's layout as an RGB array: the query with its region on the left, then one row per method of its
    top-k retrieved images (in rank order). ``rows`` are ``(label, image paths)``; labels are written only with
    ``show_labels`` (leave them out for human-study stimuli, which must not reveal the method). ``heatmaps[r][i]``,
    a [0, 1] map at image i's size, is overlaid on that image (e.g. a point-specific map)."""
    query = _fit(draw_region(load_image(query_image).to_uint8(), region), tile)
    lines = []
    for r, (label, paths) in enumerate(rows):
        tiles = []
        if show_labels:
            margin = np.full((tile, LABEL_WIDTH, 3), 255, np.uint8)
            cv2.putText(margin, str(label or "")[:20], (6, tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                        cv2.LINE_AA)
            tiles.append(margin)
        for i, path in enumerate(paths):
            image = load_image(path).to_uint8()
            heat = heatmaps[r][i] if heatmaps and r < len(heatmaps) and i < len(heatmaps[r]) else None
            if heat is not None:
                image = overlay(image, heat)
            tiles += [_fit(image, tile), np.full((tile, gap, 3), 255, np.uint8)]
        row_tiles = tiles[:-1] if len(tiles) > 1 else tiles or [np.full((tile, 1, 3), 255, np.uint8)]
        lines.append(np.concatenate(row_tiles, 1))
    width = max([line.shape[1] for line in lines], default=1)
    stacked = []
    for line in lines:
        padded = np.full((tile, width, 3), 255, np.uint8)
        padded[:, :line.shape[1]] = line
        stacked += [padded, np.full((gap, width, 3), 255, np.uint8)]
    right = np.concatenate(stacked[:-1], 0) if stacked else np.full((tile, 1, 3), 255, np.uint8)
    height = max(right.shape[0], query.shape[0])
    canvas = np.full((height, query.shape[1] + 4 * gap + right.shape[1], 3), 255, np.uint8)
    canvas[:query.shape[0], :query.shape[1]] = query
    canvas[:right.shape[0], query.shape[1] + 4 * gap:] = right
    return canvas


def png_bytes(image_rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image_rgb[:, :, ::-1]))
    if not ok:
        raise EmlError("PNG encoding failed")
    return encoded.tobytes()


def montage_for_query(rankings: pd.DataFrame, query_id: str, methods=None, top_k: int | None = None,
                      show_labels: bool = True, tile: int = 128) -> bytes:
    """PNG bytes of the montage of one query from a ``retrieval_rankings`` table (rows: methods in ``methods``
    order, default the table's order)."""
    chosen = rankings[rankings["query_id"] == query_id]
    if chosen.empty:
        raise ArgumentError("query_id", f"no rankings for query {query_id!r}")
    first = chosen.iloc[0]
    region = Region(first["region_kind"], first["box_x0"], first["box_y0"], first["box_x1"], first["box_y1"])
    methods = list(methods or dict.fromkeys(chosen["method"]))
    rows = []
    for name in methods:
        ranked = chosen[chosen["method"] == name].sort_values("rank")
        if top_k:
            ranked = ranked.head(top_k)
        rows.append((name, list(ranked["gallery_image"])))
    return png_bytes(montage(first["query_image"], region, rows, tile=tile, show_labels=show_labels))


def heatmap_for(retrieved: RetrievedMap) -> np.ndarray:
    """A retrieved map as the montage overlays it: rectified, upsampled to the image, divided by its max."""
    shown, _ = normalised_at_image_size(retrieved.raw_map, retrieved.image_size)
    return shown
