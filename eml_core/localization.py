"""Localization over a dataset: explain batches of pairs and sweep each method's map (the plumbing around
:mod:`eml_core.sweep`, which holds the maths).

Images are decoded and batched (:mod:`eml_core.batches`), every pair of a batch
is explained once, each registered map method (:mod:`eml_core.methods`) reads
its maps off that explanation, and every scored side becomes
``localization_items`` rows. An unreadable image sends its pair to ``errors``;
the rest go on.
"""

from __future__ import annotations

import torch

from eml_core.batches import load_batch
from eml_core.datasets import ErrorRecord
from eml_core.decomposition import explain_pair
from eml_core.errors import EmlError
from eml_core.images import load_image
from eml_core.methods import DEFAULT_METHODS, method_maps
from eml_core.presentation import normalised_at_image_size
from eml_core.sweep import FINE_THRESHOLDS, sweep_thresholds, threshold_size


def pair_maps(model, query_path: str, retrieved_path: str, methods=DEFAULT_METHODS, device: str = "cpu"):
    """Raw overall maps ``{method: {side: (1, h, w)}}`` of one pair of image files."""
    q = model.preprocessing(load_image(query_path).pixels).to(device)
    r = model.preprocessing(load_image(retrieved_path).pixels).to(device)
    return method_maps(explain_pair(model, q, r), methods)


def localize_pairs(model, pairs, methods=DEFAULT_METHODS, thresholds=FINE_THRESHOLDS, connectivity: int = 4,
                   batch_size: int = 16, device: str = "cpu", stage: str = "localize", sides=("query",),
                   resolution: str = "image"):
    """Sweep every method's map of the ``sides`` of every pair; returns ``(rows, errors)``.

    By default only the query side is scored: with one pair per image (its
    nearest same-class partner) every image is then localized exactly once, on
    the map explaining its own pair. ``sides=("query", "retrieved")`` scores both.
    ``rows`` follow the ``localization_items`` schema; an unreadable image sends
    its pair to ``errors`` and the rest go on. ``resolution``: ``"image"``
    thresholds each map at its image's size, ``"authors_224"`` at 224 x 224 with
    boxes scaled back to the image (:mod:`eml_core.sweep`).
    """
    threshold_size((1, 1), resolution)   # refuse an unknown resolution before any work
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
                                    min_side=model.stride or 1, stage=stage, errors=errors,
                                    resolution=resolution))
    return rows, errors


def _sweep_rows(pairs, maps, methods, thresholds, connectivity, sides, min_side: int = 1, stage: str = "localize",
                errors: list | None = None, resolution: str = "image") -> list[dict]:
    """``localization_items`` rows of a batch of explained pairs.

    An image smaller than one feature cell (``min_side``, the backbone's stride)
    is not scored: its map has a single value, so every box covers the whole
    image and would count as correct at every threshold. It gets an error row.
    """

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
                normalised, flagged = normalised_at_image_size(maps[method][side][row_index],
                                                               threshold_size(item.size, resolution))
                for result in sweep_thresholds(normalised, item.box, thresholds, connectivity, image_size=item.size):
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
