"""``eml explain``: every registered map method of one image pair, written as raw ``.npy`` (signed, feature
resolution) and overlay ``.png`` (rectified, upsampled, divided by the max), plus ``explanation.json``.

One backbone pass per image serves every method (the registry reads each method's maps off one
:class:`~eml_core.decomposition.PairExplanation`); point-specific maps come from the same explanation.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.atomic import write_bytes_atomic
from eml_core.decomposition import explain_pair
from eml_core.errors import ArgumentError
from eml_core.heads import head_needs_feature_size
from eml_core.images import LoadedImage, load_image
from eml_core.methods import method_maps
from eml_core.models import check_finite_parameters, model_from_spec, resolve_device
from eml_core.presentation import overlay, present, save_png
from tasks.configs import ExplainConfig

SIDES = ("query", "retrieved")


def _check_point(point, image: LoadedImage, argument: str) -> None:
    if point is None:
        return
    height, width = image.size
    x, y = point
    if not (0 <= x < width and 0 <= y < height):
        raise ArgumentError(argument, f"point ({x:g}, {y:g}) is outside {image.path}, which is {width}x{height} "
                                      f"pixels (x in [0, {width}), y in [0, {height}))")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@task(name="explain-pair", tags=["gpu"], cache_policy=NO_CACHE)
def explain(config: ExplainConfig) -> dict:
    """Write every map of the pair into ``config.out``; returns the summary also written to explanation.json."""
    config.check_inputs()
    out_dir = Path(config.out)
    images = {"query": load_image(config.query), "retrieved": load_image(config.retrieved)}
    points = {"query": config.point_query, "retrieved": config.point_retrieved}
    for side in SIDES:
        _check_point(points[side], images[side], f"point_{side}")
    model = model_from_spec(config.model, allow_random_init=config.allow_random_init)
    check_finite_parameters(model, config.model)
    if config.input_size != "default":
        size = None
        if config.input_size != "native":
            size = (int(config.input_size[0]), int(config.input_size[1]))
        if size != model.preprocessing.input_size and head_needs_feature_size(model.config.get("head", "")):
            raise ArgumentError("input_size", f"model {config.model} has a flatten head tied to its input size "
                                              f"{model.preprocessing.input_size}")
        model.preprocessing.input_size = size
    device = resolve_device(config.device, "device")
    model = model.to(device)
    inputs = {side: model.preprocessing(image.pixels) for side, image in images.items()}
    for side, image in images.items():
        height, width = inputs[side].shape[-2:]
        model.check_input_size(int(height), int(width), source=image.path)

    explanation = explain_pair(model, inputs["query"], inputs["retrieved"], similarity=config.similarity)
    maps: dict[str, tuple[str, torch.Tensor]] = {}
    for method, sides in method_maps(explanation, config.methods).items():
        for side in SIDES:
            maps[f"{side}_{method}"] = (side, sides[side][0])
    for side, other in (("query", "retrieved"), ("retrieved", "query")):
        if points[side] is not None:
            specific = explanation.point_specific(side, [points[side]], image_size=images[side].size)
            maps[f"point_specific_{side}_point_on_{other}"] = (other, specific[0, 0])

    out_dir.mkdir(parents=True, exist_ok=True)
    records = {}
    for name, (side, raw) in maps.items():
        image = images[side]
        raw_cpu = raw.detach().float().cpu()
        heat, flagged = present(raw_cpu, image.size)
        write_bytes_atomic(out_dir / f"{name}.npy", _npy(raw_cpu.numpy()))
        save_png(out_dir / f"{name}.png", overlay(image.to_uint8(), heat[0] if heat.dim() == 3 else heat))
        records[name] = {"npy": f"{name}.npy", "png": f"{name}.png", "image": side,
                         "feature_size": list(raw.shape[-2:]), "flagged_empty_or_nonfinite": bool(flagged)}
    point_to_point = explanation.point_to_point[0].detach().float().cpu().numpy()
    write_bytes_atomic(out_dir / "point_to_point.npy", _npy(point_to_point))
    records["point_to_point"] = {"npy": "point_to_point.npy", "shape": list(explanation.point_to_point.shape[1:])}

    summary = {
        "query": str(images["query"].path),
        "retrieved": str(images["retrieved"].path),
        "model": config.model,
        "model_config": model.config,
        "config": config.to_dict(),
        "similarity_kind": config.similarity,
        "similarity": float(explanation.similarity[0]),
        "completeness_residual": float(explanation.completeness_residual[0]),
        "linearisation_residual": {k: float(v[0]) for k, v in explanation.linearisation_residual.items()},
        "decomposition_method": explanation.query.method,
        "degenerate": bool(explanation.degenerate[0]),
        "points": {side: list(p) if p is not None else None for side, p in points.items()},
        "image_sizes": {side: list(image.size) for side, image in images.items()},
        "input_sizes": {side: list(size) for side, size in explanation.input_sizes.items()},
        "feature_sizes": {side: list(explanation.feature_size(side)) for side in SIDES},
        "dropped_alpha": {side: image.dropped_alpha for side, image in images.items()},
        "device": str(device),
        "maps": records,
    }
    write_bytes_atomic(out_dir / "explanation.json", json.dumps(summary, indent=2, default=str).encode())
    return summary


def summary_lines(summary: dict) -> list[str]:
    """What ``eml explain`` prints."""
    lines = [f"similarity ({summary['similarity_kind']}): {summary['similarity']:.6f}",
             f"completeness residual: {summary['completeness_residual']:.3e} "
             f"(decomposition: {summary['decomposition_method']})",
             f"wrote {len(summary['maps'])} maps (.npy + overlay .png) and explanation.json to "
             f"{summary['config']['out']}"]
    flagged = [n for n, r in summary["maps"].items() if r.get("flagged_empty_or_nonfinite")]
    if flagged:
        lines.append(f"flagged (no positive values, shown blank): {', '.join(flagged)}")
    return lines
