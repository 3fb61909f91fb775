r"""Cross-view orientation from decomposition maps (paper Section VII-A, Figs. 8, 9, 17).

A street-view panorama and an aerial image of the same spot are matched by a
two-branch model (:mod:`eml_core.crossview_model`). Rotate the aerial image by a
known angle; the maps of the rotated pair then tell which way the panorama
faces. This module holds the angle conventions, the rotation, both of the
paper's estimators (plus a robust one), the error and the summary tables.

**Angle conventions** (the paper's Fig. 8; every angle in degrees).
Pixel coordinates are pixel *indices*: pixel ``u`` covers ``[u, u + 1)`` and its
centre is at ``u`` (the half-pixel convention of :mod:`eml_core.sampling`).

* Panorama of width W, column u: :math:`\phi_s(u) = 360 (u + 0.5) / W`.
  0 = south, 90 = west, 180 = north, 270 = east: the left edge faces south and
  the view turns clockwise (seen from above) from left to right.
* Aerial image, north up, y down, of size H x W with centre
  :math:`c_x = (W - 1) / 2, c_y = (H - 1) / 2`:
  :math:`\phi_a(x, y) = \operatorname{atan2}(-(x - c_x),\ y - c_y) \bmod 360`.
  Straight below the centre is 0 (south), left is 90 (west), up is 180 (north).
  Inverse: :math:`x = c_x - r \sin\phi,\ y = c_y + r \cos\phi`.
* In an aligned pair the panorama column facing azimuth phi shows what the
  aerial image shows at azimuth phi.
* **Rotation by theta** (:func:`rotate_aerial`): the content at azimuth phi
  moves to :math:`\phi + \theta` (clockwise on screen, the radius kept). The
  rotated pair's true relative orientation is theta: the column ``u`` now
  matches aerial azimuth :math:`\phi_s(u) + \theta`.
* **Error**: :math:`\operatorname{wrap}(\theta - \hat\theta)` in [-180, 180)
  (the paper: "add or subtract 360").

**Estimators** (O = overall map, "Decomposition" or "Decomposition+Bias", a
parameter; P = the point-to-point matrix of Eq. 5):

* ``overall``: :math:`\hat\theta = \phi_a(\arg\max O_a) - \phi_s(\arg\max O_s)`.
* ``point_specific``: :math:`p^* = \arg\max O_s`; the point-specific map of
  the pixel at p* over the aerial image is row p* of P:
  :math:`\hat\theta = \phi_a(\arg\max_x P[p^*, x]) - \phi_s(p^*)`. Given the
  explanation this is one matrix-vector product, no model call.
* ``point_specific_top{k}`` (beyond the paper; k = 10 by default): the
  **top-k maxima**. The k cells p_i of highest :math:`O_s` each give the
  point-specific rule's angle :math:`\theta_i = \phi_a(x_i) - \phi_s(p_i)`,
  :math:`x_i = \arg\max_x P[p_i, x]`, weighted by :math:`\max(P[p_i, x_i], 0)`
  -- that pair's share of the similarity; the estimate is the **weighted mode**:
  the 7-degree window holding most weight, refined to the weighted circular
  mean of the angles inside it. *Why the mode of maxima, not a map-weighted
  circular mean:* maps are multimodal (two landmarks, a landmark and a road),
  and a mean of two modes points between them, at nothing; every other cell
  of a map also carries some positive weight, and that background mass pulls a
  mean away from the peak (on the embedded data a weighted mode over whole
  maps was also worse than over their maxima for k <= 10). Maxima of k maps
  vote once each, so one wrong panorama pixel is outvoted. If this beats
  ``point_specific`` clearly, the single-pixel rule is the bottleneck.
  Cost: k matrix-vector products.

**Where the argmax is taken.** Maps are argmaxed at feature resolution and the
chosen pixel is the centre of the chosen cell. The paper upsamples bilinearly
first, but a bilinear interpolant reaches its maximum at a grid node, so the
upsampled argmax is the pixel nearest the same cell centre; the feature-level
rule gives the same angles without ties between equal upsampled pixels, and
the point-specific map at a cell centre is exactly that row of P (bilinear
sampling at a cell centre has weight 1 on the cell). Ties go to the first
cell in raster order. A map with no positive value (or non-finite values) is
*flagged*: its argmax is arbitrary; the row is kept (a pipeline applying the
rule would also return some angle) and counted, flagged, in the summary.

**Histogram** (Fig. 9): 7-degree bins centred on 0 (bin k holds errors nearest
7k, ties towards 0, so bin 0 is exactly [-3.5, 3.5]: the share "within
+-3.5 degrees"); the last bin, centred on 180, holds |error| > 178.5 (3 degrees
wide, since 360 is not a multiple of 7). Chance of +-3.5: 7/360 = 1.9%.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as functional

from eml_core.errors import ArgumentError

FILLS = ("reflect", "disc")
OVERALL_MAPS = {"decomposition": False, "decomposition_bias": True}  # name -> bias flag of PairExplanation.overall
BASE_METHODS = ("overall", "point_specific")
DEFAULT_TOP_K = 10
HISTOGRAM_BIN = 7.0
CHANCE_WITHIN_3_5 = 7.0 / 360.0


def top_k_method(top_k: int) -> str:
    """Name of the robust estimator with ``top_k`` panorama cells."""
    return f"point_specific_top{top_k}"


def orientation_methods(top_k: int | None = DEFAULT_TOP_K) -> tuple[str, ...]:
    """The methods a run reports: the paper's two, and the robust one unless ``top_k`` is None."""
    return BASE_METHODS + ((top_k_method(top_k),) if top_k else ())


# ---------------------------------------------------------------------------------------------
# conventions


def wrap_degrees(angle):
    """Angle(s) wrapped to [-180, 180)."""
    wrapped = np.mod(np.asarray(angle, dtype=np.float64) + 180.0, 360.0)
    wrapped = np.where(wrapped >= 360.0, 0.0, wrapped)  # float mod can round up to the divisor
    result = wrapped - 180.0
    return float(result) if np.ndim(result) == 0 else result


def unit_degrees(angle):
    """Angle(s) wrapped to [0, 360)."""
    return wrap_degrees(np.asarray(angle, dtype=np.float64) - 180.0) + 180.0


def orientation_error(truth, estimate):
    """``wrap(truth - estimate)`` in [-180, 180): how far the estimate must turn to reach the truth."""
    return wrap_degrees(np.asarray(truth, dtype=np.float64) - np.asarray(estimate, dtype=np.float64))


def panorama_azimuth(u, width: int):
    """phi_s of panorama column(s) ``u`` (pixel index, may be fractional) of a panorama ``width`` wide."""
    if width < 1:
        raise ArgumentError("width", f"must be positive, got {width}")
    result = unit_degrees(360.0 * (np.asarray(u, dtype=np.float64) + 0.5) / width)
    return float(result) if np.ndim(result) == 0 else result


def panorama_column(azimuth, width: int):
    """The (fractional) column index facing ``azimuth``, in [-0.5, width - 0.5): inverse of phi_s."""
    result = unit_degrees(azimuth) * width / 360.0 - 0.5
    return float(result) if np.ndim(result) == 0 else result


def aerial_centre(size: tuple[int, int]) -> tuple[float, float]:
    """``(cx, cy)`` of an aerial image of ``size`` = (height, width), in pixel-index coordinates."""
    height, width = size
    return (width - 1) / 2.0, (height - 1) / 2.0


def aerial_azimuth(x, y, size: tuple[int, int]):
    """phi_a of aerial pixel(s) (x, y) of an image of ``size`` = (height, width): 0 south, 90 west."""
    cx, cy = aerial_centre(size)
    dx = np.asarray(x, dtype=np.float64) - cx
    dy = np.asarray(y, dtype=np.float64) - cy
    result = unit_degrees(np.degrees(np.arctan2(-dx, dy)))
    return float(result) if np.ndim(result) == 0 else result


def aerial_point(azimuth, radius, size: tuple[int, int]):
    """``(x, y)`` at ``azimuth`` and ``radius`` (pixels) from the centre: inverse of phi_a."""
    cx, cy = aerial_centre(size)
    phi = np.radians(np.asarray(azimuth, dtype=np.float64))
    r = np.asarray(radius, dtype=np.float64)
    return cx - r * np.sin(phi), cy + r * np.cos(phi)


def cell_centre_pixels(feature_size: tuple[int, int], image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(x, y)`` (each ``(h*w,)``, raster order) of the centres of a feature grid's cells.

    Cell (i, j) of an h x w grid over an H x W image is centred at
    ``x = (j + 0.5) W / w - 0.5``, ``y = (i + 0.5) H / h - 0.5`` (the inverse of the
    sampling convention of :mod:`eml_core.sampling`).
    """
    h, w = feature_size
    height, width = image_size
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return ((jj + 0.5) * width / w - 0.5).ravel(), ((ii + 0.5) * height / h - 0.5).ravel()


def panorama_cell_azimuths(feature_size: tuple[int, int]) -> np.ndarray:
    """phi_s of every cell centre (raster order): ``360 (j + 0.5) / w``, whatever the image width."""
    h, w = feature_size
    return np.tile(360.0 * (np.arange(w, dtype=np.float64) + 0.5) / w, h)


def aerial_cell_azimuths(feature_size: tuple[int, int], image_size: tuple[int, int] | None = None) -> np.ndarray:
    """phi_a of every cell centre (raster order). For a square image and grid it does not depend on the size."""
    image_size = image_size or feature_size
    x, y = cell_centre_pixels(feature_size, image_size)
    return aerial_azimuth(x, y, image_size)


# ---------------------------------------------------------------------------------------------
# rotation


def rotate_aerial(pixels: torch.Tensor, theta, fill: str = "reflect") -> torch.Tensor:
    """Rotate square aerial image(s) so that content at azimuth phi moves to phi + theta.

    ``pixels`` ``(3, H, W)`` or ``(B, 3, H, W)`` (any values; RGB in [0, 1] for
    images), ``theta`` one angle or one per image. Bilinear resampling about the
    centre (:func:`aerial_centre`); multiples of 90 degrees are exact pixel
    permutations. ``fill``:

    * ``"reflect"``: the corners the rotation uncovers are filled by reflecting
      the image at its edges (``grid_sample``'s reflection padding);
    * ``"disc"``: only the inscribed disc is kept (radius W / 2 from the
      centre), the rest is 0, for every angle including 0: the content seen is
      then the same whatever the rotation.

    In the normalised coordinates of ``affine_grid`` (centre 0, square image),
    an output offset d' samples the input at ``d = [[c, s], [-s, c]] d'``,
    c = cos theta, s = sin theta: the inverse of turning the azimuth by theta.
    """
    if fill not in FILLS:
        raise ArgumentError("fill", f"expected one of {FILLS}, got {fill!r}")
    batched = pixels.dim() == 4
    x = pixels if batched else pixels.unsqueeze(0)
    if x.dim() != 4:
        raise ArgumentError("pixels", f"expected (3, H, W) or (B, 3, H, W), got shape {tuple(pixels.shape)}")
    height, width = x.shape[-2:]
    if height != width:
        raise ArgumentError("pixels", f"aerial image must be square to rotate about its centre, got {width}x{height}")
    angles = np.broadcast_to(np.asarray(theta, dtype=np.float64), (x.shape[0],))
    out = torch.empty_like(x)
    generic = []
    for index, angle in enumerate(angles):
        quarter = angle / 90.0
        if abs(quarter - round(quarter)) < 1e-12:
            # exact: azimuth +90 turns south (below) to west (left), i.e. clockwise on screen = rot90 with k=-1
            out[index] = torch.rot90(x[index], k=-int(round(quarter)) % 4, dims=(-2, -1))
        else:
            generic.append(index)
    if generic:
        radians = np.radians(angles[generic])
        c, s = np.cos(radians), np.sin(radians)
        matrices = torch.tensor(np.stack([np.stack([c, s, 0 * c], 1), np.stack([-s, c, 0 * c], 1)], 1),
                                dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
        source = x[generic].to(matrices.dtype)
        grid = functional.affine_grid(matrices, list(source.shape), align_corners=False)
        rotated = functional.grid_sample(source, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out[generic] = rotated.to(out.dtype)
    if fill == "disc":
        out = out * disc_mask((height, width), device=out.device).to(out.dtype)
    return out if batched else out[0]


def disc_mask(size: tuple[int, int], device=None) -> torch.Tensor:
    """``(H, W)`` mask of the pixels whose centre lies within W / 2 of the image centre."""
    height, width = size
    cx, cy = aerial_centre(size)
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=device),
                            torch.arange(width, dtype=torch.float64, device=device), indexing="ij")
    return ((xx - cx) ** 2 + (yy - cy) ** 2) <= (min(height, width) / 2.0) ** 2


def random_rotations(pair_ids: Iterable[str], count: int = 1, seed: int = 0) -> dict[str, list[float]]:
    """``count`` angles per pair, uniform in [0, 360), drawn from (seed, pair id) only: any sharding of the
    pairs gives every pair the same angles. Rounded to 0.01 degree so tables and reruns agree exactly."""
    if count < 1:
        raise ArgumentError("count", f"must be at least 1, got {count}")
    rotations = {}
    for pair_id in pair_ids:
        digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        rotations[pair_id] = [round(float(v), 2) for v in rng.uniform(0.0, 360.0, size=count)]
    return rotations


def rotations_for(pair_ids: Sequence[str], rotations) -> dict[str, list[float]]:
    """Resolve ``rotations``: one list of angles for every pair, or a mapping ``{pair_id: angles}``."""
    if isinstance(rotations, Mapping):
        missing = [p for p in pair_ids if p not in rotations]
        if missing:
            raise ArgumentError("rotations", f"no rotation given for pair(s) {', '.join(missing[:5])}")
        resolved = {p: [float(a) for a in np.atleast_1d(rotations[p])] for p in pair_ids}
    else:
        angles = [float(a) for a in np.atleast_1d(np.asarray(rotations, dtype=np.float64))]
        resolved = {p: list(angles) for p in pair_ids}
    for pair_id, angles in resolved.items():
        if not angles or not all(math.isfinite(a) for a in angles):
            raise ArgumentError("rotations", f"pair {pair_id}: angles must be finite numbers, got {angles}")
    return resolved


# ---------------------------------------------------------------------------------------------
# estimators


@dataclass(frozen=True)
class Estimate:
    """One orientation estimate and the cells it chose (flat raster indices into each feature grid)."""

    estimate: float              # degrees, [0, 360)
    panorama_cell: int
    aerial_cell: int
    panorama_value: float        # the map value at the chosen cell (overall map of the panorama)
    aerial_value: float          # the map value at the chosen aerial cell (overall or point-specific)
    flagged: bool                # a map had no positive (or a non-finite) value: the argmax is arbitrary


def _flat_argmax(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per map ``(..., h, w)``: (first argmax in raster order, its value, flagged)."""
    flat = maps.detach().reshape(*maps.shape[:-2], -1).double()
    finite = torch.isfinite(flat).all(-1)
    clean = torch.where(torch.isfinite(flat), flat, torch.full_like(flat, -math.inf))
    values, index = clean.max(-1)  # torch.max returns the first index among ties
    flagged = ~finite | ~(values > 0)
    return index, values, flagged


def grid_of(maps: torch.Tensor) -> tuple[int, int]:
    """``(h, w)`` of maps ``(..., h, w)``."""
    return int(maps.shape[-2]), int(maps.shape[-1])


def _check_maps(maps: torch.Tensor, name: str, batch: int | None = None) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        raise ArgumentError(name, f"expected maps of shape (B, h, w), got {getattr(maps, 'shape', type(maps))}")
    if batch is not None and maps.shape[0] != batch:
        raise ArgumentError(name, f"batch of {maps.shape[0]} maps does not match {batch}")
    return maps


def estimate_from_maps(panorama_map: torch.Tensor, aerial_map: torch.Tensor,
                       aerial_size: tuple[int, int] | None = None) -> list[Estimate]:
    """The paper's single-pixel rule on B map pairs: ``phi_a(argmax aerial_map) - phi_s(argmax panorama_map)``.

    ``panorama_map`` ``(B, hs, ws)`` and ``aerial_map`` ``(B, ha, wa)`` are raw
    maps at feature resolution. With the two overall maps this is the
    ``overall`` estimator; :func:`estimate_point_specific` passes the aerial
    point-specific map of the panorama's argmax instead. ``aerial_size`` (H, W)
    of the aerial image only matters for a non-square feature grid.
    """
    _check_maps(panorama_map, "panorama_map")
    _check_maps(aerial_map, "aerial_map", panorama_map.shape[0])
    p_index, p_value, p_flag = _flat_argmax(panorama_map)
    a_index, a_value, a_flag = _flat_argmax(aerial_map)
    return _estimates(p_index, p_value, p_flag, a_index, a_value, a_flag,
                      grid_of(panorama_map), grid_of(aerial_map), aerial_size)


def _estimates(p_index, p_value, p_flag, a_index, a_value, a_flag, panorama_grid, aerial_grid, aerial_size):
    phi_s = panorama_cell_azimuths(panorama_grid)
    phi_a = aerial_cell_azimuths(aerial_grid, aerial_size)
    out = []
    for b in range(len(p_index)):
        p, a = int(p_index[b]), int(a_index[b])
        out.append(Estimate(float(unit_degrees(phi_a[a] - phi_s[p])), p, a, float(p_value[b]), float(a_value[b]),
                            bool(p_flag[b] or a_flag[b])))
    return out


def estimate_point_specific(panorama_map: torch.Tensor, point_specific, aerial_size: tuple[int, int] | None = None
                            ) -> list[Estimate]:
    """The paper's point-specific estimator.

    ``point_specific(cells)`` returns the aerial point-specific maps
    ``(B, K, ha, wa)`` of panorama cells ``cells`` ``(B, K)`` (flat indices) --
    :meth:`~eml_core.decomposition.PairExplanation.point_specific_cells`, or rows
    of a given P in tests.
    """
    _check_maps(panorama_map, "panorama_map")
    p_index, p_value, p_flag = _flat_argmax(panorama_map)
    maps = point_specific(p_index.view(-1, 1))[:, 0]
    a_index, a_value, a_flag = _flat_argmax(maps)
    return _estimates(p_index, p_value, p_flag, a_index, a_value, a_flag,
                      grid_of(panorama_map), grid_of(maps), aerial_size)


def estimate_top_k(panorama_map: torch.Tensor, point_specific, top_k: int = DEFAULT_TOP_K,
                   aerial_size: tuple[int, int] | None = None, window: float = HISTOGRAM_BIN) -> list[Estimate]:
    """The robust estimator: the weighted mode of the top-k maxima (module docstring).

    The k panorama cells p_i of highest overall value each give the
    point-specific rule's angle ``theta_i = phi_a(x_i) - phi_s(p_i)``,
    x_i = argmax of their point-specific map, with weight
    ``w_i = max(P[p_i, x_i], 0)``. The window of ``window`` degrees (on a
    1-degree grid) holding the most weight wins; the estimate is the weighted
    circular mean of the angles within ``window / 2`` of its centre. The chosen
    cells reported are those of the heaviest vote in the window, so their
    azimuths differ by an angle within ``window / 2`` of the estimate.
    """
    _check_maps(panorama_map, "panorama_map")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ArgumentError("top_k", f"must be a positive integer, got {top_k!r}")
    batch = panorama_map.shape[0]
    panorama_grid = grid_of(panorama_map)
    flat = panorama_map.detach().reshape(batch, -1).double()
    k = min(top_k, flat.shape[1])
    clean = torch.where(torch.isfinite(flat), flat, torch.full_like(flat, -math.inf))
    top_values, top_cells = clean.topk(k, dim=1)                     # sorted, highest first (ties: lower index)
    maps = point_specific(top_cells)                                  # (B, k, ha, wa): k matrix-vector products
    aerial_cells, aerial_values, aerial_flags = _flat_argmax(maps)    # (B, k)
    phi_s = panorama_cell_azimuths(panorama_grid)
    phi_a = aerial_cell_azimuths(grid_of(maps), aerial_size)
    panorama_index, aerial_index = top_cells.cpu().numpy(), aerial_cells.cpu().numpy()
    angles = np.mod(phi_a[aerial_index] - phi_s[panorama_index], 360.0)    # (B, k)
    weights = np.where(aerial_flags.cpu().numpy(), 0.0, aerial_values.cpu().numpy().clip(min=0))
    width = max(1, int(round(window)))
    out = []
    for b in range(batch):
        histogram = np.bincount(np.floor(angles[b]).astype(int) % 360, weights=weights[b], minlength=360)
        windowed = np.convolve(np.concatenate([histogram, histogram[:width - 1]]), np.ones(width), "valid")[:360]
        centre = (int(np.argmax(windowed)) + width / 2.0) % 360.0  # first best window: deterministic
        inside = (np.abs(orientation_error(angles[b], centre)) <= window / 2.0) & (weights[b] > 0)
        flagged = not inside.any() or not bool(top_values[b, 0] > 0)
        if inside.any():
            w, radians = weights[b][inside], np.radians(angles[b][inside])
            estimate = float(unit_degrees(np.degrees(np.arctan2((w * np.sin(radians)).sum(),
                                                                (w * np.cos(radians)).sum()))))
            heaviest = int(np.flatnonzero(inside)[np.argmax(w)])
        else:  # no vote with positive weight: fall back to the single-pixel rule of the top cell
            estimate, heaviest = float(angles[b, 0]), 0
        out.append(Estimate(estimate, int(panorama_index[b, heaviest]), int(aerial_index[b, heaviest]),
                            float(flat[b, panorama_index[b, heaviest]]), float(aerial_values[b, heaviest]), flagged))
    return out


def estimate_orientations(explanation, overall_map: str = "decomposition", top_k: int | None = DEFAULT_TOP_K,
                          panorama_side: str = "query") -> dict[str, list[Estimate]]:
    """Every estimator on a :class:`~eml_core.decomposition.PairExplanation` of B (panorama, rotated aerial) pairs.

    ``panorama_side`` is the side holding the panorama (``query`` for
    :meth:`~eml_core.crossview_model.CrossViewModel.explain`). The overall maps
    are computed once and shared; the point-specific step costs one
    matrix-vector product per pair (``top_k`` of them for the top-k maxima).
    """
    if overall_map not in OVERALL_MAPS:
        raise ArgumentError("overall_map", f"expected one of {', '.join(OVERALL_MAPS)}, got {overall_map!r}")
    aerial_side = "retrieved" if panorama_side == "query" else "query"
    bias = OVERALL_MAPS[overall_map]
    panorama = explanation.overall(panorama_side, bias=bias)
    aerial = explanation.overall(aerial_side, bias=bias)
    aerial_size = explanation.input_sizes[aerial_side]

    def rows_of_p(cells):
        return explanation.point_specific_cells(panorama_side, cells)

    results = {
        "overall": estimate_from_maps(panorama, aerial, aerial_size),
        "point_specific": estimate_point_specific(panorama, rows_of_p, aerial_size),
    }
    if top_k:
        results[top_k_method(top_k)] = estimate_top_k(panorama, rows_of_p, top_k, aerial_size)
    return results


# ---------------------------------------------------------------------------------------------
# summaries (rows of the orientation_summary and orientation_histogram tables)


_REACH = math.floor((180.0 - HISTOGRAM_BIN / 2) / HISTOGRAM_BIN)  # 25: the bins centred on -175 ... 175


def histogram_bin(error):
    """Bin centre(s) of error(s) in [-180, 180): the nearest multiple of 7 (ties towards 0), or 180 for
    |error| > 178.5."""
    e = np.asarray(error, dtype=np.float64)
    k = np.sign(e) * np.ceil(np.abs(e) / HISTOGRAM_BIN - 0.5)
    return np.where(np.abs(k) > _REACH, 180.0, k * HISTOGRAM_BIN)


def histogram_bins() -> list[tuple[float, float, float]]:
    """``(centre, low, high)`` of every bin: centres -175 ... 175 in steps of 7, then 180, which wraps
    around: (178.5, 181.5) stands for (178.5, 180) and [-180, -178.5)."""
    half = HISTOGRAM_BIN / 2
    bins = [(k * HISTOGRAM_BIN, k * HISTOGRAM_BIN - half, k * HISTOGRAM_BIN + half) for k in range(-_REACH, _REACH + 1)]
    last = _REACH * HISTOGRAM_BIN + half
    bins.append((180.0, last, 360.0 - last))
    return bins


def _groups(rows) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]:
    import pandas as pd

    data = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    groups: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    if len(data) == 0:
        return groups
    for (overall_map, method, fill), group in data.groupby(["overall_map", "method", "aerial_fill"], sort=True):
        groups[(str(overall_map), str(method), str(fill))] = (group["error"].to_numpy(dtype=np.float64),
                                                              group["map_flagged"].to_numpy(dtype=bool))
    return groups


def orientation_summary(rows) -> list[dict]:
    """``orientation_summary`` rows: per (overall map, method, fill), the shares of errors within
    +-3.5, +-10 and +-30 degrees, the median absolute error, the count and how many had a flagged map."""
    out = []
    for (overall_map, method, fill), (errors, flagged) in _groups(rows).items():
        absolute = np.abs(errors)
        out.append({
            "overall_map": overall_map, "method": method, "aerial_fill": fill,
            "within_3_5": float(np.mean(absolute <= 3.5)), "within_10": float(np.mean(absolute <= 10.0)),
            "within_30": float(np.mean(absolute <= 30.0)), "median_abs_error": float(np.median(absolute)),
            "mean_abs_error": float(np.mean(absolute)), "count": int(len(errors)), "flagged": int(flagged.sum()),
            "chance_within_3_5": CHANCE_WITHIN_3_5,
        })
    return out


def orientation_histogram(rows) -> list[dict]:
    """``orientation_histogram`` rows: per (overall map, method, fill) and 7-degree bin, count and share."""
    out = []
    bins = histogram_bins()
    for (overall_map, method, fill), (errors, _) in _groups(rows).items():
        centres = histogram_bin(errors)
        for centre, low, high in bins:
            count = int(np.sum(centres == centre))
            out.append({"overall_map": overall_map, "method": method, "aerial_fill": fill, "bin_centre": centre,
                        "bin_low": low, "bin_high": high, "count": count, "share": count / len(errors)})
    return out
