"""Bilinear sampling of feature-resolution tensors at image pixel coordinates.

Pixel (u, v) of an image of width W maps to feature column
``x = (u + 0.5) * w / W - 0.5`` (half-pixel centres, the convention of
``align_corners=False``), clamped to ``[0, w - 1]`` at the edges. Sampling is
linear in the sampled tensor, so it is expressed as weights over the h*w
positions: ``sample = weights @ values``. A region is the mean of the bilinear
samples at the centres of the pixels it covers, which is again a weight vector
(separable in x and y), so points and regions share one code path.
"""

from __future__ import annotations

import math

import torch

from eml_core.errors import ArgumentError


def _axis_weights(coordinates: torch.Tensor, image_extent: int, feature_extent: int) -> torch.Tensor:
    """Rows of 1-D linear-interpolation weights, ``(K, feature_extent)``, one per pixel coordinate."""
    f = (coordinates.double() + 0.5) * feature_extent / image_extent - 0.5
    f = f.clamp(0, feature_extent - 1)
    low = f.floor().long().clamp(max=feature_extent - 1)
    high = (low + 1).clamp(max=feature_extent - 1)
    frac = f - low.double()
    weights = torch.zeros(coordinates.shape[0], feature_extent, dtype=torch.float64)
    rows = torch.arange(coordinates.shape[0])
    weights.index_put_((rows, low), 1 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    return weights


def point_weights(points_xy, image_size: tuple[int, int], feature_size: tuple[int, int],
                  argument: str = "points_xy") -> torch.Tensor:
    """Weights ``(K, h*w)`` that bilinearly sample a feature grid at pixel points ``(K, 2)`` = (x, y)."""
    points = torch.as_tensor(points_xy, dtype=torch.float64).reshape(-1, 2)
    height, width = image_size
    outside = (points[:, 0] < 0) | (points[:, 0] >= width) | (points[:, 1] < 0) | (points[:, 1] >= height)
    outside |= ~torch.isfinite(points).all(dim=1)
    if outside.any():
        x, y = points[outside.nonzero()[0, 0]].tolist()
        raise ArgumentError(argument, f"point ({x:g}, {y:g}) is outside the {width}x{height} image "
                                      f"(x must be in [0, {width}), y in [0, {height}))")
    wx = _axis_weights(points[:, 0], width, feature_size[1])
    wy = _axis_weights(points[:, 1], height, feature_size[0])
    return (wy.unsqueeze(2) * wx.unsqueeze(1)).flatten(1)


def box_weights(boxes_xyxy, image_size: tuple[int, int], feature_size: tuple[int, int],
                argument: str = "boxes") -> torch.Tensor:
    """Weights ``(K, h*w)`` averaging bilinear samples over the pixels a box (x0, y0, x1, y1) covers.

    Box corners are pixel edges: the box ``(0, 0, W, H)`` is the whole image. A
    pixel belongs to the box when its centre does; a box covering no pixel centre
    falls back to its centre point.
    """
    boxes = torch.as_tensor(boxes_xyxy, dtype=torch.float64).reshape(-1, 4)
    height, width = image_size
    rows = []
    for x0, y0, x1, y1 in boxes.tolist():
        finite = all(math.isfinite(v) for v in (x0, y0, x1, y1))
        if not finite or not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ArgumentError(argument, f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must satisfy 0 <= x0 < x1 <= {width} "
                                          f"and 0 <= y0 < y1 <= {height} in the {width}x{height} image")
        wx = _axis_weights(_covered_pixels(x0, x1), width, feature_size[1]).mean(0)
        wy = _axis_weights(_covered_pixels(y0, y1), height, feature_size[0]).mean(0)
        rows.append((wy.unsqueeze(1) * wx.unsqueeze(0)).flatten())
    return torch.stack(rows) if rows else torch.zeros(0, feature_size[0] * feature_size[1], dtype=torch.float64)


def _covered_pixels(start: float, stop: float) -> torch.Tensor:
    first, last = math.ceil(start - 0.5), math.floor(stop - 0.5)
    if last < first:
        return torch.tensor([(start + stop) / 2 - 0.5], dtype=torch.float64)
    return torch.arange(first, last + 1, dtype=torch.float64)
