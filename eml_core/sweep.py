"""The maths of weakly supervised localization (paper Section VI-A, Tables I and II): boxes, the
threshold sweep, and the accuracy tables.

For one image and one method: normalise the overall map (divide by its max, at
the original image size), threshold it at t (``map > t``), keep the largest
connected component, take its bounding box and compare it with the ground-truth
box: correct when IoU > 0.5 (the paper's rule). Sweeping t over a grid gives
accuracy per method and threshold (Table I) and the best per method (Table II).

MaxBoxAcc (Choe et al., CVPR 2020) uses a fine grid of thresholds and reports,
for IoU criteria delta in {0.3, 0.5, 0.7}, the best over t of the share of images
with IoU >= delta.

Boxes are pixel edges ``(x0, y0, x1, y1)``: a component covering columns
3..5 has x0 = 3, x1 = 6. Components are 4-connected by default (8 optional).

Two algorithms give the same boxes (``sweep_thresholds(..., algorithm=...)``):

* ``"union_find"`` (default): one pass over the pixels for all thresholds
  (:mod:`eml_core.component_sweep`); its cost hardly grows with the number of
  thresholds.
* ``"opencv"``: the reference, one ``cv2.connectedComponentsWithStats`` per
  threshold on the mask cropped to its bounding rows and columns.

**Tie rule** (components of equal largest area): the first in OpenCV's label
order on that crop wins. At 4-connectivity that is the component whose first
pixel in raster order comes first. At 8-connectivity OpenCV labels 2x2 blocks
(Spaghetti), so it is the component whose first 2x2 block comes first in block
raster order, blocks anchored at the mask's top-left bounding corner: e.g.
single pixels at (row 0, column 3) and (row 1, column 0) tie, and (1, 0) wins
at 8-connectivity (block (0, 0) before block (0, 1)) but (0, 3) at 4.

**Resolution.** ``"image"`` (default): the map is thresholded at the original
image size. ``"authors_224"``: the authors' resolution as issue 13 describes it
(their public code has no localization script to compare with): the map is
thresholded at 224 x 224 and each box edge is scaled back to the image, x * W / 224 and y * H / 224 in
float64, not rounded (so the IoU equals the IoU at 224 x 224 against the
ground-truth box scaled the same way, IoU being invariant under axis scaling).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from eml_core.errors import ArgumentError

PAPER_THRESHOLDS = (0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
FINE_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(100))  # 0.00, 0.01, ..., 0.99
MAXBOXACC_IOUS = (0.3, 0.5, 0.7)
CORRECT_IOU = 0.5
ALGORITHMS = ("union_find", "opencv")
RESOLUTIONS = ("image", "authors_224")
AUTHORS_SIZE = (224, 224)  # (height, width) at which the authors threshold every map

Box = tuple[float, float, float, float]


def box_iou(a: Box | None, b: Box | None) -> float:
    """Intersection over union of two pixel-edge boxes; 0 when either is missing or both are empty."""
    if a is None or b is None:
        return 0.0
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    intersection = max(0.0, width) * max(0.0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return float(intersection / union) if union > 0 else 0.0


def largest_component_box(mask: np.ndarray, connectivity: int = 4) -> Box | None:
    """Bounding box of the largest connected component of a boolean mask, or None if it is empty."""
    if connectivity not in (4, 8):
        raise ArgumentError("connectivity", f"must be 4 or 8, got {connectivity}")
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=connectivity)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # label 0 is the background
    x, y, w, h = (int(v) for v in stats[largest, :4])
    return (float(x), float(y), float(x + w), float(y + h))


class ThresholdResult(NamedTuple):
    """One threshold's box (None: empty mask) and its IoU with the ground truth (a tuple: made 100 times per map)."""

    threshold: float
    box: Box | None
    iou: float

    @property
    def correct(self) -> bool:
        return self.iou > CORRECT_IOU


def sweep_thresholds(normalised_map: np.ndarray, ground_truth: Box, thresholds=PAPER_THRESHOLDS,
                     connectivity: int = 4, algorithm: str = "union_find",
                     image_size: tuple[int, int] | None = None) -> list[ThresholdResult]:
    """Box and IoU for each threshold t (in the given order) of a map normalised to [0, 1].

    The mask of t is ``normalised_map > t`` exactly as NumPy compares (strict:
    a pixel equal to t is outside; a Python float t is cast to the map's float
    dtype first, a NumPy scalar is promoted); its box is the largest component's
    (tie rule in the module docstring). ``algorithm``: ``"union_find"`` (one pass,
    default) or ``"opencv"`` (one labelling per threshold, the reference); both
    give identical boxes. ``image_size`` = (height, width) of the image the
    ground truth refers to, when the map was thresholded at another size
    (``resolution="authors_224"``): boxes are then scaled to it
    (:func:`scale_box`) before the IoU. By default the map is at image size.
    """
    if algorithm not in ALGORITHMS:
        raise ArgumentError("algorithm", f"expected one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    thresholds = tuple(thresholds)   # read twice below
    if algorithm == "union_find":
        corners, found = _one_pass_box_array(normalised_map, thresholds, connectivity)
    else:
        corners, found = _box_array(_opencv_boxes(normalised_map, thresholds, connectivity))
    map_size = tuple(np.shape(normalised_map))
    if image_size is not None and tuple(image_size) != map_size:
        corners = _scaled_corners(corners, map_size, image_size)
    ious = _corner_ious(corners, found, ground_truth)
    return [ThresholdResult(float(t), tuple(box) if ok else None, iou)
            for t, box, ok, iou in zip(thresholds, corners.tolist(), found.tolist(), ious, strict=True)]


def _box_array(boxes: list[Box | None]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes as a float64 (m, 4) array (zeros where None) and whether each is there."""
    found = np.array([box is not None for box in boxes], dtype=bool)
    corners = np.array([box if box is not None else (0.0, 0.0, 0.0, 0.0) for box in boxes],
                       dtype=np.float64).reshape(len(boxes), 4)
    return corners, found


def _scaled_corners(corners: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """:func:`scale_box` of every row (the same float64 operations: x * W_to / W_from, y * H_to / H_from)."""
    (from_height, from_width), (to_height, to_width) = from_size, to_size
    scaled = corners.copy()
    scaled[:, 0::2] = corners[:, 0::2] * to_width / from_width
    scaled[:, 1::2] = corners[:, 1::2] * to_height / from_height
    return scaled


def box_ious(boxes: list[Box | None], ground_truth: Box | None) -> list[float]:
    """:func:`box_iou` of every box with one ground truth, vectorised (the same float64 operations, same order)."""
    return _corner_ious(*_box_array(boxes), ground_truth)


def _corner_ious(a: np.ndarray, found: np.ndarray, ground_truth: Box | None) -> list[float]:
    """IoU of every row of a (m, 4) corner array whose ``found`` is set with ``ground_truth`` (0 elsewhere)."""
    if ground_truth is None or not len(a):
        return [0.0] * len(a)
    b = ground_truth
    width = np.minimum(a[:, 2], b[2]) - np.maximum(a[:, 0], b[0])
    height = np.minimum(a[:, 3], b[3]) - np.maximum(a[:, 1], b[1])
    intersection = np.maximum(0.0, width) * np.maximum(0.0, height)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + float((b[2] - b[0]) * (b[3] - b[1])) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(found & (union > 0), intersection / union, 0.0)
    return iou.tolist()


def _opencv_boxes(normalised_map: np.ndarray, thresholds, connectivity: int) -> list[Box | None]:
    """The reference: one OpenCV labelling per threshold."""
    _check_map(normalised_map)
    boxes: list[Box | None] = []
    for threshold in thresholds:
        mask = normalised_map > threshold
        # Label only the rows and columns the mask touches: same components, far fewer pixels at high t.
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = None
        if rows.size:
            top, left = int(rows[0]), int(columns[0])
            inner = largest_component_box(mask[top:rows[-1] + 1, left:columns[-1] + 1], connectivity)
            assert inner is not None  # the cropped mask has set pixels, hence a component
            box = (inner[0] + left, inner[1] + top, inner[2] + left, inner[3] + top)
        boxes.append(box)
    return boxes


def largest_component_boxes(normalised_map: np.ndarray, thresholds, connectivity: int = 4) -> list[Box | None]:
    """Largest-component box of ``normalised_map > t`` for every t, in one union-find pass.

    Same boxes as one :func:`largest_component_box` per threshold on the mask
    cropped to its bounding rows and columns (the ``"opencv"`` algorithm), tie
    rule included; the algorithm is in :mod:`eml_core.component_sweep`. Each
    threshold is first turned into the float64 value that NumPy's ``map > t``
    effectively compares against (see :func:`comparison_thresholds`), so
    float32 maps and Python-float thresholds behave exactly as in NumPy.
    Integer and boolean maps are compared as float64 (as NumPy does with a float t).
    """
    corners, found = _one_pass_box_array(normalised_map, tuple(thresholds), connectivity)
    return [tuple(box) if ok else None
            for box, ok in zip(corners.tolist(), found.tolist(), strict=True)]


def _one_pass_box_array(normalised_map: np.ndarray, thresholds: tuple, connectivity: int) \
        -> tuple[np.ndarray, np.ndarray]:
    """The one-pass sweep's boxes as a float64 (m, 4) array in threshold order, and whether each mask has one."""
    if connectivity not in (4, 8):
        raise ArgumentError("connectivity", f"must be 4 or 8, got {connectivity}")
    _check_map(normalised_map)
    values = np.asarray(normalised_map)
    try:
        grid, index, usable = _comparison_plan(values.dtype, tuple(type(t) for t in thresholds), thresholds)
    except TypeError:   # a threshold that cannot be a cache key (e.g. a 0-d array): planned for this call only
        grid, index, usable = _comparison_plan.__wrapped__(values.dtype, (), thresholds)
    if values.dtype not in (np.float32, np.float64):   # native float32/float64 only: one compiled kernel each
        values = values.astype(np.float64)
    values = np.ascontiguousarray(values)
    if grid.size == 0 or values.size == 0:
        return np.zeros((len(thresholds), 4)), np.zeros(len(thresholds), dtype=bool)
    from eml_core import component_sweep  # numba: imported on the first one-pass sweep only

    if max(values.shape) >= component_sweep.MAX_SIDE:
        raise ArgumentError("normalised_map", f"a side of {max(values.shape)} pixels is more than the one-pass "
                                              f"sweep handles ({component_sweep.MAX_SIDE - 1}); use algorithm='opencv'")
    corners = component_sweep.largest_component_boxes(values, grid, connectivity == 8)[index]
    found = usable & (corners[:, 0] >= 0)
    return np.where(found[:, None], corners, 0).astype(np.float64), found


@lru_cache(maxsize=64)
def _comparison_plan(map_dtype, types: tuple, thresholds: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the one-pass sweep: the sorted distinct comparison values (:func:`comparison_thresholds`), the position
    of each threshold's among them, and which thresholds compare at all (map > NaN is all False).

    Cached: a flow sweeps thousands of maps against the same grid. ``types`` is part of the key because a Python
    float and a NumPy scalar can be equal and still compare differently with a float32 map.
    """
    effective = comparison_thresholds(map_dtype, thresholds)
    usable = ~np.isnan(effective)
    grid = np.unique(effective[usable])      # sorted, duplicates once
    index = np.searchsorted(grid, np.where(usable, effective, 0.0))
    index = np.minimum(index, max(grid.size - 1, 0))   # an unusable threshold's slot (masked by ``usable``)
    for array in (grid, index, usable):
        array.setflags(write=False)          # shared between calls
    return grid, index, usable


def comparison_thresholds(map_dtype, thresholds) -> np.ndarray:
    """The float64 value each t is compared with in NumPy's ``map > t`` (NEP 50 promotion).

    For a floating-point map, a Python number is cast to the map's dtype (a
    float32 map compares with float32(0.15) = 0.15000000596...) and a NumPy
    scalar promotes with it (a float64 t against a float32 map compares
    exactly). The cast value, widened to float64, gives the same comparison with
    the map's values widened to float64. An integer or boolean map compares
    with t itself (as float64).
    """
    thresholds = list(thresholds)
    if not np.issubdtype(map_dtype, np.floating):
        return np.asarray(thresholds, dtype=np.float64).reshape(len(thresholds))
    out = np.empty(len(thresholds), dtype=np.float64)
    by_type: dict[type, list[int]] = {}
    for i, threshold in enumerate(thresholds):
        by_type.setdefault(type(threshold), []).append(i)
    for indices in by_type.values():
        common = np.result_type(map_dtype, thresholds[indices[0]])
        out[indices] = np.asarray([thresholds[i] for i in indices]).astype(common).astype(np.float64)
    return out


def _check_map(normalised_map) -> None:
    if np.ndim(normalised_map) != 2:
        raise ArgumentError("normalised_map",
                            f"expected a 2-D map (height, width), got shape {np.shape(normalised_map)}")


def threshold_size(image_size: tuple[int, int], resolution: str = "image") -> tuple[int, int]:
    """(height, width) at which the map of an image of ``image_size`` is thresholded."""
    if resolution not in RESOLUTIONS:
        raise ArgumentError("resolution", f"expected one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    return (int(image_size[0]), int(image_size[1])) if resolution == "image" else AUTHORS_SIZE


def scale_box(box: Box | None, from_size: tuple[int, int], to_size: tuple[int, int]) -> Box | None:
    """A pixel-edge box of a (height, width) = ``from_size`` map in ``to_size`` coordinates.

    x * W_to / W_from and y * H_to / H_from in float64, not rounded.
    """
    if box is None:
        return None
    (from_height, from_width), (to_height, to_width) = from_size, to_size
    return (box[0] * to_width / from_width, box[1] * to_height / from_height,
            box[2] * to_width / from_width, box[3] * to_height / from_height)


EVALUATION_SPLITS = ("test",)  # Tables I/II are the evaluation split's (the unseen classes under the class rule)


def rows_of_splits(frame, splits):
    """The rows of ``splits`` (a frame without a ``split`` column, or ``splits=None``: every row)."""
    if splits is None or "split" not in frame.columns:
        return frame
    return frame[frame["split"].isin(list(splits))]


def accuracy_table(rows, thresholds=PAPER_THRESHOLDS, splits=EVALUATION_SPLITS):
    """Accuracy per (method, threshold) from rows with keys method, threshold, correct (pandas DataFrame), over
    the rows of ``splits`` only (default: the evaluation split, as the paper's Tables I/II; None: every row)."""
    import pandas as pd

    frame = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    frame = rows_of_splits(frame, splits)
    frame = frame[frame["threshold"].isin([float(t) for t in thresholds])]
    table = (frame.groupby(["method", "threshold"], as_index=False)
             .agg(accuracy=("correct", "mean"), count=("correct", "size")))
    return table


def best_per_method(summary):
    """Table II: the best accuracy of each method and the threshold reaching it (lowest on ties)."""
    ordered = summary.sort_values(["method", "accuracy", "threshold"], ascending=[True, False, True])
    best = ordered.groupby("method", as_index=False).first()
    return best.rename(columns={"threshold": "best_threshold", "accuracy": "best_accuracy"})


def max_box_accuracy(items, iou_thresholds=MAXBOXACC_IOUS, splits=EVALUATION_SPLITS):
    """MaxBoxAcc per method and IoU criterion from fine-grid rows (method, threshold, iou) of ``splits``."""
    import pandas as pd

    items = rows_of_splits(items, splits)
    records = []
    for method, group in items.groupby("method"):
        for delta in iou_thresholds:
            per_t = group.assign(hit=group["iou"] >= delta).groupby("threshold")["hit"].mean()
            best_t = float(per_t.idxmax())
            records.append({"method": method, "iou_threshold": float(delta), "maxboxacc": float(per_t.max()),
                            "best_map_threshold": best_t, "count": int((group["threshold"] == best_t).sum())})
    return pd.DataFrame.from_records(records, columns=["method", "iou_threshold", "maxboxacc",
                                                       "best_map_threshold", "count"])
