"""Figures of a localization run: accuracy against threshold, and example maps with boxes."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pandas as pd

from eml_core.images import load_image
from eml_core.presentation import normalised_at_image_size, overlay
from eml_core.sweep import sweep_thresholds


def accuracy_plot(summary: pd.DataFrame, title: str) -> bytes:
    """PNG: localization accuracy against threshold, one line per method (paper Table I as a plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for method, group in summary.groupby("method"):
        group = group.sort_values("threshold")
        axes.plot(group["threshold"], group["accuracy"] * 100, marker="o", label=method)
    axes.set_xlabel("threshold t (map / max > t)")
    axes.set_ylabel("localization accuracy (%), IoU > 0.5")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def example_panel(item, raw_maps: dict, thresholds: dict, tile: int = 224) -> np.ndarray:
    """One row: each method's map over the image, with its box (red) at the method's best threshold
    and the ground-truth box (green)."""
    image = load_image(item.path)
    tiles = []
    for method, raw in raw_maps.items():
        normalised, _ = normalised_at_image_size(raw, image.size)
        result = sweep_thresholds(normalised, item.box, [thresholds[method]])[0]
        picture = overlay(image.to_uint8(), normalised).copy()
        x0, y0, x1, y1 = (int(round(v)) for v in item.box)
        cv2.rectangle(picture, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 2)
        if result.box is not None:
            bx0, by0, bx1, by1 = (int(v) for v in result.box)
            cv2.rectangle(picture, (bx0, by0), (bx1 - 1, by1 - 1), (255, 0, 0), 2)
        picture = cv2.resize(picture, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(picture, f"{method} IoU {result.iou:.2f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(picture)
    return np.concatenate(tiles, axis=1)


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()
