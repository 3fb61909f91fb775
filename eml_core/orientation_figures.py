"""Figures of the orientation experiment, as PNG bytes (the caller stores them through the results I/O).

* :func:`histogram_png` -- the paper's Fig. 9: error histograms of two methods
  side by side (7-degree bins centred on 0), with the share within +-3.5
  degrees and chance (7/360) marked.
* :func:`example_png` -- the paper's Fig. 8: the panorama with its overall map
  and the chosen column; the rotated aerial image with its overall map and with
  the point-specific map of that column, each with the chosen pixel's azimuth
  drawn as a ray from the centre; the true azimuth of the panorama's column
  (``phi_s(u*) + theta``) dashed.

matplotlib runs headless (the Agg canvas of a ``Figure``, no pyplot state).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import torch

from eml_core.errors import ArgumentError
from eml_core.orientation import (
    CHANCE_WITHIN_3_5,
    DEFAULT_TOP_K,
    OVERALL_MAPS,
    aerial_azimuth,
    aerial_point,
    cell_centre_pixels,
    estimate_orientations,
    grid_of,
    orientation_error,
    panorama_azimuth,
    rotate_aerial,
    unit_degrees,
)
from eml_core.presentation import overlay, present


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def histogram_png(histogram_rows, overall_map: str = "decomposition", methods=("overall", "point_specific"),
                  aerial_fill: str | None = None, title: str | None = None) -> bytes:
    """Fig. 9 from ``orientation_histogram`` rows: one panel per method (same y scale)."""
    from matplotlib.figure import Figure

    data = histogram_rows if isinstance(histogram_rows, pd.DataFrame) else pd.DataFrame(list(histogram_rows))
    if len(data) == 0:
        raise ArgumentError("histogram_rows", "no histogram rows to draw")
    data = data[data["overall_map"] == overall_map]
    if aerial_fill is not None:
        data = data[data["aerial_fill"] == aerial_fill]
    panels = [(m, data[data["method"] == m].sort_values("bin_centre")) for m in methods]
    missing = [m for m, rows in panels if len(rows) == 0]
    if missing:
        raise ArgumentError("methods", f"no histogram rows for {', '.join(missing)} with overall map {overall_map!r}")
    top = max(float(rows["share"].max()) for _, rows in panels)
    figure = Figure(figsize=(5.2 * len(panels), 3.6))
    for index, (method, rows) in enumerate(panels):
        axis = figure.add_subplot(1, len(panels), index + 1)
        centres = rows["bin_centre"].to_numpy()
        widths = (rows["bin_high"] - rows["bin_low"]).to_numpy()
        colours = ["tab:red" if c == 0 else "tab:blue" for c in centres]
        axis.bar(centres, rows["share"].to_numpy(), width=widths * 0.95, color=colours)
        axis.axhline(CHANCE_WITHIN_3_5, color="grey", linestyle="--", linewidth=0.8, label="chance per bin (7/360)")
        centre_share = float(rows.loc[rows["bin_centre"] == 0, "share"].sum())
        count = int(rows["count"].sum())
        axis.set_title(f"{method} ({overall_map}): {centre_share:.1%} within +-3.5 deg (n={count})", fontsize=9)
        axis.set_xlim(-182, 182)
        axis.set_ylim(0, top * 1.1 if top > 0 else 1)
        axis.set_xticks(range(-180, 181, 60))
        axis.set_xlabel("error = truth - estimate (degrees)")
        if index == 0:
            axis.set_ylabel("share of pairs")
            axis.legend(fontsize=7, loc="upper left")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def _as_rgb(pixels: torch.Tensor) -> np.ndarray:
    rgb = (pixels.detach().permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(rgb.cpu().numpy())


def example_png(panorama: torch.Tensor, aerial: torch.Tensor, maps: dict[str, torch.Tensor], chosen: dict[str, dict],
                truth: float, caption: str = "") -> bytes:
    """Fig. 8 for one rotated pair.

    ``panorama`` ``(3, H, W)`` and ``aerial`` ``(3, S, S)`` (rotated) in [0, 1];
    ``maps`` raw maps ``{"panorama": (h, w), "aerial_overall": ..., "aerial_point_specific": ...}``;
    ``chosen`` per method (``overall``, ``point_specific``) a dict with
    ``panorama_x``, ``panorama_azimuth``, ``aerial_x``, ``aerial_y``,
    ``aerial_azimuth``, ``estimate``; ``truth`` the true relative angle.
    """
    from matplotlib.figure import Figure

    pano_rgb, aerial_rgb = _as_rgb(panorama), _as_rgb(aerial)
    size = aerial_rgb.shape[:2]
    shown = {name: present(raw.detach().float().cpu()[None], pano_rgb.shape[:2] if name == "panorama" else size)[0][0]
             for name, raw in maps.items()}
    figure = Figure(figsize=(11, 7.2))
    grid = figure.add_gridspec(2, 2, height_ratios=[1, 2.2])
    axis = figure.add_subplot(grid[0, :])
    axis.imshow(overlay(pano_rgb, shown["panorama"]))
    u = chosen["point_specific"]["panorama_x"]
    axis.axvline(u, color="white", linewidth=2)
    axis.set_title(f"panorama, overall map; chosen column u* at phi_s = "
                   f"{chosen['point_specific']['panorama_azimuth']:.1f} deg", fontsize=9)
    axis.axis("off")
    centre = ((size[1] - 1) / 2, (size[0] - 1) / 2)
    expected = float(unit_degrees(chosen["point_specific"]["panorama_azimuth"] + truth))
    panels = (("overall", "aerial_overall"), ("point_specific", "aerial_point_specific"))
    for column, (method, key) in enumerate(panels):
        axis = figure.add_subplot(grid[1, column])
        axis.imshow(overlay(aerial_rgb, shown[key]))
        pick = chosen[method]
        end = aerial_point(pick["aerial_azimuth"], size[0] / 2, size)
        axis.plot([centre[0], float(end[0])], [centre[1], float(end[1])], color="white", linewidth=2)
        axis.plot([pick["aerial_x"]], [pick["aerial_y"]], marker="o", color="white", markersize=6)
        if method == "point_specific":
            true_end = aerial_point(expected, size[0] / 2, size)
            axis.plot([centre[0], float(true_end[0])], [centre[1], float(true_end[1])], color="black", linewidth=1.5,
                      linestyle="--")
        error = float(orientation_error(truth, pick["estimate"]))
        label = "overall map" if method == "overall" else "point-specific map of u*"
        axis.set_title(f"aerial, {label}: estimate {pick['estimate']:.1f}, truth {truth:.1f}, error {error:+.1f} deg",
                       fontsize=9)
        axis.axis("off")
    if caption:
        figure.suptitle(caption, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def render_example(model_pair, pair, angle: float, overall_map: str = "decomposition", fill: str = "reflect",
                   device: str = "cpu") -> bytes:
    """Load a pair, rotate its aerial image by ``angle``, explain it and draw :func:`example_png` (network input
    resolution)."""
    from eml_core.crossview_data import load_pair_pixels

    if overall_map not in OVERALL_MAPS:
        raise ArgumentError("overall_map", f"expected one of {', '.join(OVERALL_MAPS)}, got {overall_map!r}")
    pixels = load_pair_pixels(pair)
    rotated = rotate_aerial(pixels.aerial, angle, fill)
    street, aerial = model_pair.street, model_pair.aerial
    panorama_input = street.preprocessing(pixels.panorama)
    aerial_input = aerial.preprocessing(rotated)
    explanation = model_pair.explain(panorama_input[None].to(device), aerial_input[None].to(device))
    estimates = estimate_orientations(explanation, overall_map, top_k=DEFAULT_TOP_K)
    bias = OVERALL_MAPS[overall_map]
    panorama_map = explanation.overall("query", bias=bias)[0]
    pano_size, aerial_size = grid_of(pixels.panorama), grid_of(rotated)
    chosen = {}
    for method in ("overall", "point_specific"):
        estimate = estimates[method][0]
        px, _ = cell_centre_pixels(explanation.feature_size("query"), pano_size)
        ax, ay = cell_centre_pixels(explanation.feature_size("retrieved"), aerial_size)
        chosen[method] = {
            "panorama_x": float(px[estimate.panorama_cell]),
            "panorama_azimuth": float(panorama_azimuth(px[estimate.panorama_cell], pano_size[1])),
            "aerial_x": float(ax[estimate.aerial_cell]), "aerial_y": float(ay[estimate.aerial_cell]),
            "aerial_azimuth": float(aerial_azimuth(ax[estimate.aerial_cell], ay[estimate.aerial_cell],
                                                   aerial_size)),
            "estimate": estimate.estimate,
        }
    point = estimates["point_specific"][0].panorama_cell
    maps = {"panorama": panorama_map,
            "aerial_overall": explanation.overall("retrieved", bias=bias)[0],
            "aerial_point_specific": explanation.point_specific_cells("query", [[point]])[0, 0]}
    truth = float(unit_degrees(angle + pair.azimuth_offset))
    return example_png(pixels.panorama, rotated, maps, chosen, truth,
                       caption=f"pair {pair.pair_id}, aerial rotated by {angle:g} deg ({overall_map})")
