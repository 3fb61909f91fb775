"""Weakly supervised localization from explanation maps (paper Section VI-A, Tables I and II).

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
import torch

from eml_core.errors import ArgumentError
from eml_core.presentation import present

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
            box = (inner[0] + left, inner[1] + top, inner[2] + left, inner[3] + top)
        results.append(ThresholdResult(float(threshold), box, box_iou(box, ground_truth)))
    return results


def normalised_at_image_size(raw_map: torch.Tensor, image_size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """rectify -> upsample to the original image size -> divide by the max; returns (map, flagged)."""
    shown, flagged = present(raw_map.detach().float().cpu(), image_size, mode="max")
    return shown.numpy(), bool(flagged)


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


# ---------------------------------------------------------------------------------------------
# from pairs to table rows

METHODS = ("gradcam", "gradcam_nonorm", "decomposition", "decomposition_bias")


def method_maps(explanation, methods=METHODS) -> dict[str, dict[str, torch.Tensor]]:
    """Raw overall maps ``{method: {side: (B, h, w)}}`` of a PairExplanation."""
    maps = {}
    for method in methods:
        if method == "gradcam":
            maps[method] = explanation.grad_cam(normalised=True)
        elif method == "gradcam_nonorm":
            maps[method] = explanation.grad_cam(normalised=False)
        elif method in ("decomposition", "decomposition_bias"):
            bias = method == "decomposition_bias"
            maps[method] = {side: explanation.overall(side, bias=bias) for side in ("query", "retrieved")}
        else:
            raise ArgumentError("methods", f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return maps


def pair_maps(model, query_path: str, retrieved_path: str, methods=METHODS, device: str = "cpu"):
    """Raw overall maps ``{method: {side: (1, h, w)}}`` of one pair of image files."""
    from eml_core.decomposition import explain_pair
    from eml_core.images import load_image

    q = model.preprocessing(load_image(query_path).pixels).to(device)
    r = model.preprocessing(load_image(retrieved_path).pixels).to(device)
    return method_maps(explain_pair(model, q, r), methods)


def localize_pairs(model, pairs, methods=METHODS, thresholds=FINE_THRESHOLDS, connectivity: int = 4,
                   batch_size: int = 16, device: str = "cpu", stage: str = "localize", sides=("query",)):
    """Sweep every method's map of the ``sides`` of every pair; returns ``(rows, errors)``.

    By default only the query side is scored: with one pair per image (its
    nearest same-class partner) every image is then localized exactly once, on
    the map explaining its own pair. ``sides=("query", "retrieved")`` scores both.
    ``rows`` follow the ``localization_items`` schema; an unreadable image sends
    its pair to ``errors`` and the rest go on.
    """
    from eml_core.datasets import ErrorRecord
    from eml_core.decomposition import explain_pair
    from eml_core.errors import EmlError
    from eml_core.retrieval import load_batch

    rows, errors = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch_errors: list = []
        queries, q_tensors = load_batch([p.query for p in chunk], model, stage, batch_errors)
        retrieved, r_tensors = load_batch([p.retrieved for p in chunk], model, stage, batch_errors)
        bad = {e.item for e in batch_errors}
        errors.extend(batch_errors)
        usable = [i for i, p in enumerate(chunk) if p.query.image_id not in bad and p.retrieved.image_id not in bad]
        for i, pair in enumerate(chunk):
            if i not in usable:
                errors.append(ErrorRecord(stage, pair.pair_id, None, None,
                                          "pair left out: one of its images could not be read", "error"))
        if not usable:
            continue
        q_index = {item.image_id: n for n, item in enumerate(queries)}
        r_index = {item.image_id: n for n, item in enumerate(retrieved)}
        # A model without a fixed input size sees images at their own sizes: batch equal shapes only.
        groups: dict[tuple, list[int]] = {}
        for i in usable:
            q_shape = tuple(q_tensors[q_index[chunk[i].query.image_id]].shape)
            r_shape = tuple(r_tensors[r_index[chunk[i].retrieved.image_id]].shape)
            groups.setdefault((q_shape, r_shape), []).append(i)
        for group in groups.values():
            try:
                q = torch.stack([q_tensors[q_index[chunk[i].query.image_id]] for i in group]).to(device)
                r = torch.stack([r_tensors[r_index[chunk[i].retrieved.image_id]] for i in group]).to(device)
                maps = method_maps(explain_pair(model, q, r), methods)
            except (EmlError, RuntimeError) as error:
                for i in group:
                    errors.append(ErrorRecord(stage, chunk[i].pair_id, None, None, f"explanation failed: {error}"))
                continue
            rows.extend(_sweep_rows([chunk[i] for i in group], maps, methods, thresholds, connectivity, sides,
                                    min_side=model.stride or 1, stage=stage, errors=errors))
    return rows, errors


def _sweep_rows(pairs, maps, methods, thresholds, connectivity, sides, min_side: int = 1, stage: str = "localize",
                errors: list | None = None) -> list[dict]:
    """``localization_items`` rows of a batch of explained pairs.

    An image smaller than one feature cell (``min_side``, the backbone's stride)
    is not scored: its map has a single value, so every box covers the whole
    image and would count as correct at every threshold. It gets an error row.
    """
    from eml_core.datasets import ErrorRecord

    rows = []
    for row_index, pair in enumerate(pairs):
        for side, item, partner in (("query", pair.query, pair.retrieved), ("retrieved", pair.retrieved, pair.query)):
            if side not in sides:
                continue
            if min(item.size) < min_side:
                if errors is not None:
                    errors.append(ErrorRecord(stage, item.image_id, item.path, None,
                                              f"image is {item.size[1]}x{item.size[0]} pixels, smaller than one "
                                              f"feature cell ({min_side} px): any box covers it, so it is not "
                                              f"localized ({side} of pair {pair.pair_id})"))
                continue
            for method in methods:
                normalised, flagged = normalised_at_image_size(maps[method][side][row_index], item.size)
                for result in sweep_thresholds(normalised, item.box, thresholds, connectivity):
                    box = result.box or (None, None, None, None)
                    rows.append({
                        "pair_id": pair.pair_id, "image_id": item.image_id, "image": item.relative_path,
                        "split": item.split, "label": item.label, "side": side, "partner_id": partner.image_id,
                        "method": method, "threshold": result.threshold,
                        "box_x0": box[0], "box_y0": box[1], "box_x1": box[2], "box_y1": box[3],
                        "gt_x0": item.box[0], "gt_y0": item.box[1], "gt_x1": item.box[2], "gt_y1": item.box[3],
                        "iou": result.iou, "correct": result.correct, "map_flagged": flagged,
                    })
    return rows
