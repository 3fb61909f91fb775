"""Rendering the stimuli workers see, named by content hash so nothing reveals the method.

* ``overall_map``: the image pair side by side; the top ``fraction`` (2%) of the
  pixels of each image's overall map stay bright and outlined, the rest is dimmed
  (paper Fig. 5).
* ``retrieval``: the query with its region box, then the robot's top retrieved
  images in rank order (paper Fig. 11).
* catch trials of ``overall_map`` studies (:func:`catch_highlights`): both robots
  show the highlight of a *real* overall map, moved whole (translated, never
  reshaped) so that the good robot's lies on the object and the bad robot's on a
  clearly wrong region outside the object's box. A worker cannot tell a catch trial
  by the shape of its highlights: they are real maps' highlights, as in every item.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from eml_core.atomic import write_bytes_atomic
from eml_core.images import load_image
from eml_core.presentation import normalised_at_image_size, top_fraction_mask

TILE = 224
HIGHLIGHT = (255, 196, 0)
BOX = (255, 40, 40)


def _fit(image: np.ndarray, height: int = TILE) -> np.ndarray:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def highlight_mask(heat: np.ndarray, fraction: float) -> np.ndarray:
    """The top ``fraction`` of the pixels of ``heat`` (exactly ceil(fraction * N) of them), as a boolean mask."""
    return top_fraction_mask(torch.from_numpy(np.ascontiguousarray(heat)), fraction).numpy()


def draw_highlight(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dim the image except ``mask`` (same size), and outline the masked pixels."""
    out = (image_rgb.astype(np.float32) * np.where(mask[..., None], 1.0, 0.3)).round().astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(2, round(min(image_rgb.shape[:2]) / 150))
    cv2.drawContours(out, contours, -1, HIGHLIGHT, thickness)
    return out


def highlighted(image_rgb: np.ndarray, heat: np.ndarray, fraction: float) -> np.ndarray:
    """Dim the image except the top ``fraction`` of ``heat`` (same size), and outline those pixels."""
    return draw_highlight(image_rgb, highlight_mask(heat, fraction))


def image_heat(path: str, raw_map: torch.Tensor) -> np.ndarray:
    """A raw map presented at the size of its image: rectified, upsampled, divided by its max."""
    heat, _ = normalised_at_image_size(raw_map, load_image(path).size)
    return heat


def pair_stimulus(query_path: str, retrieved_path: str, query_mask: np.ndarray,
                  retrieved_mask: np.ndarray) -> np.ndarray:
    """The pair side by side, each image bright and outlined where its mask is, dimmed elsewhere."""
    tiles = [_fit(draw_highlight(load_image(path).to_uint8(), mask))
             for path, mask in ((query_path, query_mask), (retrieved_path, retrieved_mask))]
    gap = np.full((TILE, 12, 3), 255, dtype=np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1]], axis=1)


def overall_map_stimulus(query_path: str, retrieved_path: str, query_map: torch.Tensor, retrieved_map: torch.Tensor,
                         fraction: float) -> np.ndarray:
    """Paper Fig. 5: the pair with the top ``fraction`` of each image's overall map highlighted."""
    return pair_stimulus(query_path, retrieved_path,
                         highlight_mask(image_heat(query_path, query_map), fraction),
                         highlight_mask(image_heat(retrieved_path, retrieved_map), fraction))


# A catch trial's good highlight lies (almost) wholly inside the true box, its bad one (almost) wholly outside.
CATCH_INSIDE = 0.9
CATCH_OUTSIDE = 0.05


def _pixel_range(low: float, high: float, size: int) -> tuple[int, int]:
    """Pixels whose centres lie in [low, high) (box edges in pixels), as a half-open index range."""
    return (min(size, max(0, math.ceil(low - 0.5))), min(size, max(0, math.ceil(high - 0.5))))


def place_highlight(mask: np.ndarray, box, inside: bool) -> tuple[np.ndarray, float]:
    """Translate ``mask`` whole (never cut by the image edge, never reshaped) to where the largest (``inside``)
    or the smallest share of its pixels falls inside ``box`` (x0, y0, x1, y1; pixel edges); returns the placed
    mask and that share. Ties: the placement whose mask centre is nearest to (inside) or farthest from the
    box centre. Every translation is scored at once from the mask's summed-area table."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return mask.copy(), 0.0
    table = np.zeros((height + 1, width + 1), dtype=np.int64)
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    dx = np.arange(-xs.min(), width - xs.max())        # the mask stays whole inside the image
    dy = np.arange(-ys.min(), height - ys.max())
    x_lo, x_hi = _pixel_range(box[0], box[2], width)
    y_lo, y_hi = _pixel_range(box[1], box[3], height)
    # mask pixels landing in the box under (dx, dy) are those at x in [x_lo - dx, x_hi - dx) of the mask
    c, d = np.clip(x_lo - dx, 0, width), np.clip(x_hi - dx, 0, width)
    a, b = np.clip(y_lo - dy, 0, height), np.clip(y_hi - dy, 0, height)
    inside_counts = (table[b[:, None], d[None, :]] - table[a[:, None], d[None, :]]
                     - table[b[:, None], c[None, :]] + table[a[:, None], c[None, :]])
    share = inside_counts / len(ys)
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    distance = np.hypot(xs.mean() + 0.5 + dx[None, :] - centre_x, ys.mean() + 0.5 + dy[:, None] - centre_y)
    order = np.lexsort(((distance if inside else -distance).ravel(), (-share if inside else share).ravel()))
    row, column = np.unravel_index(order[0], share.shape)
    placed = np.zeros_like(mask, dtype=bool)
    placed[ys + dy[row], xs + dx[column]] = True
    return placed, float(share[row, column])


def catch_highlights(good_heat: np.ndarray, bad_heat: np.ndarray, box, fraction: float
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """The two highlights of one image of a catch trial, from two real overall maps of it: the top ``fraction``
    of ``good_heat`` moved onto the object (at least :data:`CATCH_INSIDE` of it inside ``box``), the top
    ``fraction`` of ``bad_heat`` moved off it (at most :data:`CATCH_OUTSIDE` inside). None when the image leaves
    no such room (an object filling the frame) or a map has nothing positive to highlight."""
    masks = []
    for heat, inside in ((good_heat, True), (bad_heat, False)):
        if (heat > 0).sum() < math.ceil(fraction * heat.size):  # the highlight would pad with arbitrary pixels
            return None
        placed, share = place_highlight(highlight_mask(heat, fraction), box, inside)
        if (share < CATCH_INSIDE) if inside else (share > CATCH_OUTSIDE):
            return None
        masks.append(placed)
    return masks[0], masks[1]


def retrieval_stimulus(query_path: str, box, gallery_paths: list[str]) -> np.ndarray:
    query = load_image(query_path).to_uint8().copy()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(query, (x0, y0), (x1 - 1, y1 - 1), BOX, max(2, round(min(query.shape[:2]) / 100)))
    tiles = [_fit(query, TILE), np.full((TILE, 24, 3), 255, dtype=np.uint8)]
    for path in gallery_paths:
        tiles += [_fit(load_image(path).to_uint8(), TILE), np.full((TILE, 6, 3), 255, np.uint8)]
    return np.concatenate(tiles[:-1], axis=1)


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
