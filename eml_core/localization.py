"""Localization over a dataset: explain batches of pairs and sweep each method's map (the plumbing around
:mod:`eml_core.sweep`, which holds the maths).

Images are decoded and batched (:mod:`eml_core.batches`), every pair of a batch
is explained once, each registered map method (:mod:`eml_core.methods`) reads
its maps off that explanation, and every scored side becomes
``localization_items`` rows. An unreadable image sends its pair to ``errors``;
the rest go on.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from eml_core.batches import load_batch
from eml_core.datasets import ErrorRecord
from eml_core.decomposition import explain_from_feature_maps, explain_pair
from eml_core.errors import EmlError
from eml_core.images import load_image
from eml_core.methods import DEFAULT_METHODS, method_maps
from eml_core.presentation import normalised_at_image_size
from eml_core.stored_maps import encode as encode_map
from eml_core.sweep import FINE_THRESHOLDS, sweep_thresholds, threshold_size


def pair_maps(model, query_path: str, retrieved_path: str, methods=DEFAULT_METHODS, device: str = "cpu",
              precision: str = "float32"):
    """Raw overall maps ``{method: {side: (1, h, w)}}`` of one pair of image files."""
    q = model.preprocessing(load_image(query_path).pixels).to(device)
    r = model.preprocessing(load_image(retrieved_path).pixels).to(device)
    return method_maps(explain_pair(model, q, r, precision=precision), methods)


def localize_pairs(model, pairs, methods=DEFAULT_METHODS, thresholds=FINE_THRESHOLDS, connectivity: int = 4,
                   batch_size: int = 16, device: str = "cpu", stage: str = "localize", sides=("query",),
                   resolution: str = "image", feature_maps: Mapping[str, torch.Tensor] | None = None,
                   precision: str = "float32", maps_out: list | None = None):
    """Sweep every method's map of the ``sides`` of every pair; returns ``(rows, errors)``.

    By default only the query side is scored: with one pair per image (its
    nearest same-class partner) every image is then localized exactly once, on
    the map explaining its own pair. ``sides=("query", "retrieved")`` scores both.
    ``rows`` follow the ``localization_items`` schema; an unreadable image sends
    its pair to ``errors`` and the rest go on. ``resolution``: ``"image"``
    thresholds each map at its image's size, ``"authors_224"`` at 224 x 224 with
    boxes scaled back to the image (:mod:`eml_core.sweep`).

    ``feature_maps`` ({image id: A (C, h, w)}, e.g. kept by :func:`eml_core.retrieval.embed_items`): explain
    from these maps, with no image decoded and no backbone run (the heads and the decomposition only); a pair
    whose image has no map goes to ``errors``. Without them, each batch's images are decoded and the backbone
    runs (in ``precision``).

    With a list as ``maps_out``, every scored (pair, side, method) also appends its raw feature-resolution map
    as a ``localization_maps`` row (:mod:`eml_core.stored_maps`), so its maps can be shown later without the
    model.
    """
    threshold_size((1, 1), resolution)   # refuse an unknown resolution before any work
    rows: list[dict] = []
    errors: list[ErrorRecord] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        if feature_maps is None:
            inputs = _decoded_inputs(model, chunk, stage, errors)
        else:
            inputs = _cached_inputs(chunk, feature_maps, stage, errors)
        # A model without a fixed input size sees images at their own sizes: batch equal shapes only.
        groups: dict[tuple, list[int]] = {}
        for i, (q, r) in inputs.items():
            groups.setdefault((tuple(q.shape), tuple(r.shape)), []).append(i)
        for group in groups.values():
            try:
                q = torch.stack([inputs[i][0] for i in group]).to(device)
                r = torch.stack([inputs[i][1] for i in group]).to(device)
                if feature_maps is None:
                    explanation = explain_pair(model, q, r, precision=precision)
                else:
                    explanation = explain_from_feature_maps(model, q, r)
                maps = method_maps(explanation, methods)
            except (EmlError, RuntimeError) as error:
                for i in group:
                    errors.append(ErrorRecord(stage, chunk[i].pair_id, None, None, f"explanation failed: {error}"))
                continue
            rows.extend(_sweep_rows([chunk[i] for i in group], maps, methods, thresholds, connectivity, sides,
                                    min_side=model.stride or 1, stage=stage, errors=errors,
                                    resolution=resolution, maps_out=maps_out))
    return rows, errors


def _decoded_inputs(model, chunk, stage: str, errors: list) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{index in chunk: (query input, retrieved input)}`` of the pairs whose two images decode."""
    batch_errors: list = []
    queries, q_tensors = load_batch([p.query for p in chunk], model, stage, batch_errors)
    retrieved, r_tensors = load_batch([p.retrieved for p in chunk], model, stage, batch_errors)
    errors.extend(batch_errors)
    q_index = {item.image_id: n for n, item in enumerate(queries)}
    r_index = {item.image_id: n for n, item in enumerate(retrieved)}
    inputs = {}
    for i, pair in enumerate(chunk):
        if pair.query.image_id in q_index and pair.retrieved.image_id in r_index:
            inputs[i] = (q_tensors[q_index[pair.query.image_id]], r_tensors[r_index[pair.retrieved.image_id]])
        else:
            errors.append(ErrorRecord(stage, pair.pair_id, None, None,
                                      "pair left out: one of its images could not be read", "error"))
    return inputs


def _cached_inputs(chunk, feature_maps: Mapping[str, torch.Tensor], stage: str,
                   errors: list) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{index in chunk: (query map, retrieved map)}`` of the pairs whose two images have a feature map."""
    inputs = {}
    for i, pair in enumerate(chunk):
        missing = [item.image_id for item in (pair.query, pair.retrieved) if item.image_id not in feature_maps]
        if missing:
            errors.append(ErrorRecord(stage, pair.pair_id, None, None,
                                      f"pair left out: no feature map for image {', '.join(missing)}", "error"))
            continue
        inputs[i] = (feature_maps[pair.query.image_id], feature_maps[pair.retrieved.image_id])
    return inputs


def _sweep_rows(pairs, maps, methods, thresholds, connectivity, sides, min_side: int = 1, stage: str = "localize",
                errors: list | None = None, resolution: str = "image", maps_out: list | None = None) -> list[dict]:
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
                raw = maps[method][side][row_index]
                if maps_out is not None:
                    maps_out.append({"pair_id": pair.pair_id, "image_id": item.image_id, "side": side,
                                     "method": method, "image_height": int(item.size[0]),
                                     "image_width": int(item.size[1]), **encode_map(raw)})
                normalised, flagged = normalised_at_image_size(raw, threshold_size(item.size, resolution))
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
