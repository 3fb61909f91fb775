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
3..5 has x0 = 3, x1 = 6. Components come from OpenCV
(``cv2.connectedComponentsWithStats``), 4-connected by default; among
components of equal area the first in raster order wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from eml_core.errors import ArgumentError

PAPER_THRESHOLDS = (0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
FINE_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(100))  # 0.00, 0.01, ..., 0.99
MAXBOXACC_IOUS = (0.3, 0.5, 0.7)
CORRECT_IOU = 0.5

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


@dataclass(frozen=True)
class ThresholdResult:
    threshold: float
    box: Box | None
    iou: float

    @property
    def correct(self) -> bool:
        return self.iou > CORRECT_IOU


def sweep_thresholds(normalised_map: np.ndarray, ground_truth: Box, thresholds=PAPER_THRESHOLDS,
                     connectivity: int = 4) -> list[ThresholdResult]:
    """Box and IoU for each threshold t of a map already normalised to [0, 1] at image size."""
    results = []
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
        results.append(ThresholdResult(float(threshold), box, box_iou(box, ground_truth)))
    return results


def accuracy_table(rows, thresholds=PAPER_THRESHOLDS):
    """Accuracy per (method, threshold) from rows with keys method, threshold, correct (pandas DataFrame)."""
    import pandas as pd

    frame = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    frame = frame[frame["threshold"].isin([float(t) for t in thresholds])]
    table = (frame.groupby(["method", "threshold"], as_index=False)
             .agg(accuracy=("correct", "mean"), count=("correct", "size")))
    return table


def best_per_method(summary):
    """Table II: the best accuracy of each method and the threshold reaching it (lowest on ties)."""
    ordered = summary.sort_values(["method", "accuracy", "threshold"], ascending=[True, False, True])
    best = ordered.groupby("method", as_index=False).first()
    return best.rename(columns={"threshold": "best_threshold", "accuracy": "best_accuracy"})


def max_box_accuracy(items, iou_thresholds=MAXBOXACC_IOUS):
    """MaxBoxAcc per method and IoU criterion from fine-grid rows (method, threshold, iou)."""
    import pandas as pd

    records = []
    for method, group in items.groupby("method"):
        for delta in iou_thresholds:
            per_t = group.assign(hit=group["iou"] >= delta).groupby("threshold")["hit"].mean()
            best_t = float(per_t.idxmax())
            records.append({"method": method, "iou_threshold": float(delta), "maxboxacc": float(per_t.max()),
                            "best_map_threshold": best_t, "count": int((group["threshold"] == best_t).sum())})
    return pd.DataFrame.from_records(records, columns=["method", "iou_threshold", "maxboxacc",
                                                       "best_map_threshold", "count"])
