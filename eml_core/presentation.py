"""Turning raw maps into pictures: an explicit step after the maths.

The paper's convention, in order: positive part (:func:`rectify`) -> bilinear
upsampling to the image size (:func:`upsample`, ``align_corners=False``) ->
normalisation (:func:`normalise`, divide by the max; min-max optional). A map
that is all zero (nothing positive) or non-finite cannot be normalised: it is
returned as zeros and *flagged*, never divided by zero.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as functional

from eml_core.errors import ArgumentError


def rectify(maps: torch.Tensor) -> torch.Tensor:
    """Positive part."""
    return maps.clamp_min(0)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(..., h, w)`` maps to ``size`` = (height, width), half-pixel centres."""
    leading = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    out = functional.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return out.reshape(*leading, *size)


def normalise(maps: torch.Tensor, mode: str = "max") -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each ``(h, w)`` map to [0, 1]; returns ``(normalised, flagged)``.

    ``mode="max"`` divides by the maximum (the paper), ``"minmax"`` maps
    [min, max] to [0, 1]. ``flagged`` (shape ``maps.shape[:-2]``) marks maps that
    are non-finite or have no positive range; they come back as zeros.
    """
    if mode not in ("max", "minmax"):
        raise ArgumentError("mode", f"expected 'max' or 'minmax', got {mode!r}")
    flat = maps.reshape(*maps.shape[:-2], -1)
    # The usual case (every value finite) takes one pass for the extremes, which also tell finiteness (NaN and
    # infinities propagate to them), and skips the steps that would change nothing (x - 0 == x, also for -0.0;
    # nothing to zero when no map is flagged): the same result to the bit, in a third of the passes over a map at
    # image size. Otherwise non-finite values are replaced by 0 first.
    everywhere_finite = False
    if flat.shape[-1]:   # (maps of no pixels go the general way, which refuses them as before)
        lowest, highest = torch.aminmax(flat, dim=-1, keepdim=True)
        everywhere_finite = bool(torch.isfinite(lowest).all() and torch.isfinite(highest).all())
    if everywhere_finite:
        finite = torch.ones(flat.shape[:-1], dtype=torch.bool, device=flat.device)
        clean, top, bottom = flat, highest, lowest
    else:
        finite_values = torch.isfinite(flat)
        finite = finite_values.all(-1)
        clean = torch.where(finite_values, flat, torch.zeros_like(flat))
        top = clean.max(-1, keepdim=True).values
        bottom = clean.min(-1, keepdim=True).values
    if mode == "minmax":
        span = top - bottom
        shifted = clean - bottom
    else:
        span, shifted = top, clean
    flagged = ~finite | (span.squeeze(-1) <= 0)
    scaled = shifted / torch.where(span > 0, span, torch.ones_like(span))
    if bool(flagged.any()):
        scaled = torch.where(flagged.unsqueeze(-1), torch.zeros_like(scaled), scaled)
    return scaled.reshape(maps.shape), flagged


def present(maps: torch.Tensor, image_size: tuple[int, int], mode: str = "max") -> tuple[torch.Tensor, torch.Tensor]:
    """rectify -> upsample -> normalise; returns ``(maps in [0, 1] at image size, flagged)``."""
    return normalise(upsample(rectify(maps), image_size), mode)


def top_fraction_mask(maps: torch.Tensor, fraction: float = 0.02) -> torch.Tensor:
    """Boolean mask of the top ``fraction`` of pixels of each map (exactly ceil(fraction*N) pixels).

    Ties at the cut are broken by position (first pixels win), so the count is exact.
    """
    if not 0 < fraction <= 1:
        raise ArgumentError("fraction", f"must be in (0, 1], got {fraction}")
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
    count = max(1, math.ceil(fraction * flat.shape[1]))
    index = flat.topk(count, dim=1, sorted=False).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, index, True)
    return mask.reshape(maps.shape)


def overlay(image_rgb: np.ndarray, heatmap: np.ndarray | torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heatmap (H, W), drawn with the JET colour map, onto an RGB uint8 image (H, W, 3)."""
    import cv2

    heat = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if heat.shape != image_rgb.shape[:2]:
        raise ArgumentError("heatmap", f"size {heat.shape} does not match the image {image_rgb.shape[:2]}")
    coloured = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    blended = (1 - alpha) * image_rgb.astype(np.float32) + alpha * coloured.astype(np.float32)
    return np.clip(blended, 0, 255).round().astype(np.uint8)


def save_png(path: str | Path, image_rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as PNG atomically (temp file + rename)."""
    import io

    from PIL import Image

    from eml_core.atomic import write_bytes_atomic

    buffer = io.BytesIO()
    Image.fromarray(image_rgb).save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getvalue())


def normalised_at_image_size(raw_map: torch.Tensor, image_size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """rectify -> upsample to the original image size -> divide by the max; returns (map, flagged)."""
    shown, flagged = present(raw_map.detach().float().cpu(), image_size, mode="max")
    return shown.numpy(), bool(flagged)
