"""The orientation experiment over a shard of pairs: the plumbing around :mod:`eml_core.orientation` (which
holds the conventions and the maths), as :mod:`eml_core.localization` is around :mod:`eml_core.sweep`.

Images are decoded (:func:`~eml_core.crossview_data.load_pair_pixels`), each
aerial image is rotated by each of its angles, every (panorama, rotated aerial)
is explained once by the two-branch model, every estimator and overall map
reads that explanation, and each estimate becomes an ``orientation_items`` row.
A pair whose images cannot be used is an ``errors`` row; the rest go on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from eml_core.crossview_data import CrossViewPair, load_pair_pixels
from eml_core.crossview_model import CrossViewModel
from eml_core.datasets import ErrorRecord
from eml_core.errors import ArgumentError, EmlError
from eml_core.orientation import (
    DEFAULT_TOP_K,
    FILLS,
    OVERALL_MAPS,
    Estimate,
    aerial_azimuth,
    cell_centre_pixels,
    estimate_orientations,
    orientation_error,
    panorama_cell_azimuths,
    rotate_aerial,
    rotations_for,
    unit_degrees,
)


def estimate_orientation(model_pair: CrossViewModel, pairs: Sequence[CrossViewPair], rotations,
                         overall_maps: Sequence[str] = ("decomposition",), top_k: int | None = DEFAULT_TOP_K,
                         fill: str = "reflect", batch_size: int = 8, device: str = "cpu", stage: str = "orientation",
                         panorama_aspect: float | None = None) -> tuple[list[dict], list[ErrorRecord]]:
    """Estimate the orientation of every (pair, rotation) of a shard; returns ``(rows, errors)``.

    ``model_pair`` is a :class:`~eml_core.crossview_model.CrossViewModel`;
    ``pairs`` :class:`~eml_core.crossview_data.CrossViewPair` records;
    ``rotations`` one list of angles for every pair or ``{pair_id: angles}``
    (:func:`~eml_core.orientation.random_rotations` draws them per pair id, so
    shards agree). Each
    aerial image is rotated at its own resolution (``fill``: ``reflect`` or
    ``disc``), both images are preprocessed, each (panorama, rotated aerial) is
    explained once, and every method and overall map reads that explanation.
    ``rows`` follow the ``orientation_items`` schema (one per pair, rotation,
    overall map and method); a pair whose images cannot be decoded or have the
    wrong shape is an ``errors`` row, and the rest go on.
    """
    if fill not in FILLS:
        raise ArgumentError("fill", f"expected one of {FILLS}, got {fill!r}")
    for name in overall_maps:
        if name not in OVERALL_MAPS:
            raise ArgumentError("overall_maps", f"unknown overall map {name!r}; choose from {', '.join(OVERALL_MAPS)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError("batch_size", f"must be a positive integer, got {batch_size!r}")
    angles = rotations_for([p.pair_id for p in pairs], rotations)
    rows: list[dict] = []
    errors: list[ErrorRecord] = []
    jobs: list[tuple] = []

    def flush():
        groups: dict[tuple, list] = {}
        for job in jobs:  # a model without a fixed input size sees images at their own sizes
            groups.setdefault((tuple(job[2].shape), tuple(job[3].shape)), []).append(job)
        for group in groups.values():
            try:
                explanation = model_pair.explain(torch.stack([j[2] for j in group]).to(device),
                                                 torch.stack([j[3] for j in group]).to(device))
                results = {name: estimate_orientations(explanation, name, top_k) for name in overall_maps}
            except (EmlError, RuntimeError) as error:
                for pair, angle, _, _ in group:
                    errors.append(ErrorRecord(stage, pair.pair_id, None, None,
                                              f"rotation {angle:g}: explanation failed: {error}"))
                continue
            grids = {"panorama": explanation.feature_size("query"), "aerial": explanation.feature_size("retrieved")}
            similarity = explanation.similarity.detach().cpu()
            for index, (pair, angle, _, _) in enumerate(group):
                for name, by_method in results.items():
                    for method, estimates in by_method.items():
                        rows.append(_item_row(pair, angle, fill, name, method, estimates[index], grids,
                                              float(similarity[index])))
        jobs.clear()

    for pair in pairs:
        try:
            pixels = load_pair_pixels(pair, panorama_aspect)
            panorama = model_pair.street.preprocessing(pixels.panorama)
            model_pair.street.check_input_size(panorama.shape[-2], panorama.shape[-1], pair.panorama)
        except EmlError as error:
            errors.append(ErrorRecord(stage, pair.pair_id, getattr(error, "path", None), None, str(error)))
            continue
        for angle in angles[pair.pair_id]:
            aerial = model_pair.aerial.preprocessing(rotate_aerial(pixels.aerial, angle, fill))
            jobs.append((pair, angle, panorama, aerial))
            if len(jobs) >= batch_size:
                flush()
    if jobs:
        flush()
    return rows, errors


def _item_row(pair: CrossViewPair, angle: float, fill: str, overall_map: str, method: str, estimate: Estimate,
              grids: dict[str, tuple[int, int]], similarity: float) -> dict:
    """One ``orientation_items`` row; chosen pixels in the coordinates of the pair's (cropped) images."""
    truth = float(unit_degrees(angle + pair.azimuth_offset))
    px, py = cell_centre_pixels(grids["panorama"], pair.panorama_size)
    ax, ay = cell_centre_pixels(grids["aerial"], pair.aerial_size)
    error = float(orientation_error(truth, estimate.estimate))
    return {
        "pair_id": pair.pair_id, "panorama": pair.relative_panorama, "aerial": pair.relative_aerial,
        "split": pair.split, "rotation": float(angle), "truth": truth, "aerial_fill": fill,
        "overall_map": overall_map, "method": method, "estimate": estimate.estimate, "error": error,
        "abs_error": abs(error),
        "panorama_x": float(px[estimate.panorama_cell]), "panorama_y": float(py[estimate.panorama_cell]),
        "panorama_azimuth": float(panorama_cell_azimuths(grids["panorama"])[estimate.panorama_cell]),
        "panorama_value": estimate.panorama_value,
        "aerial_x": float(ax[estimate.aerial_cell]), "aerial_y": float(ay[estimate.aerial_cell]),
        "aerial_azimuth": float(aerial_azimuth(ax[estimate.aerial_cell], ay[estimate.aerial_cell], pair.aerial_size)),
        "aerial_value": estimate.aerial_value, "similarity": similarity, "map_flagged": estimate.flagged,
    }
