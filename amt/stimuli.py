"""Rendering the stimuli workers see, named by content hash so nothing reveals the method.

* ``overall_map``: the image pair side by side; the top ``fraction`` (2%) of the
  pixels of each image's overall map stay bright and outlined, the rest is dimmed
  (paper Fig. 5).
* ``retrieval``: the query with its region box, then the robot's top retrieved
  images in rank order (paper Fig. 11).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import torch

from eml_core.atomic import write_bytes_atomic
from eml_core.images import load_image
from eml_core.presentation import normalised_at_image_size, top_fraction_mask

TILE = 224
HIGHLIGHT = (255, 196, 0)


def _fit(image: np.ndarray, height: int = TILE) -> np.ndarray:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def highlighted(image_rgb: np.ndarray, heat: np.ndarray, fraction: float) -> np.ndarray:
    """Dim the image except the top ``fraction`` of ``heat`` (same size), and outline those pixels."""
    mask = top_fraction_mask(torch.from_numpy(np.ascontiguousarray(heat)), fraction).numpy()
    out = (image_rgb.astype(np.float32) * np.where(mask[..., None], 1.0, 0.3)).round().astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(2, round(min(image_rgb.shape[:2]) / 150))
    cv2.drawContours(out, contours, -1, HIGHLIGHT, thickness)
    return out


def overall_map_stimulus(query_path: str, retrieved_path: str, query_map: torch.Tensor, retrieved_map: torch.Tensor,
                         fraction: float) -> np.ndarray:
    tiles = []
    for path, raw in ((query_path, query_map), (retrieved_path, retrieved_map)):
        image = load_image(path)
        heat, _ = normalised_at_image_size(raw, image.size)
        tiles.append(_fit(highlighted(image.to_uint8(), heat, fraction)))
    gap = np.full((TILE, 12, 3), 255, dtype=np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1]], axis=1)


def retrieval_stimulus(query_path: str, region, gallery_paths: list[str]) -> np.ndarray:
    """The paper's retrieval layout for one robot: the query with its region (a red box, or a red ring around a
    point), then the robot's retrieved images in rank order; no label, nothing that names the method.
    ``region`` is an :class:`eml_core.region_retrieval.Region`."""
    from eml_core.region_retrieval import montage

    return montage(query_path, region, [(None, list(gallery_paths))], tile=TILE, show_labels=False)


def synthetic_map(size: tuple[int, int], centre_xy: tuple[float, float], spread: float) -> torch.Tensor:
    """A smooth map peaked at a pixel (for catch trials with a known better answer)."""
    height, width = size
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return torch.exp(-((xs - centre_xy[0]) ** 2 + (ys - centre_xy[1]) ** 2) / (2 * spread ** 2))


def save_stimulus(folder: Path, rgb: np.ndarray) -> str:
    """Write the PNG under its content hash; returns the file name (nothing about the method in it)."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    data = encoded.tobytes()
    name = hashlib.sha256(data).hexdigest()[:32] + ".png"
    if not (folder / name).exists():
        write_bytes_atomic(folder / name, data)
    return name
