"""eml_core: activation decomposition for deep metric learning (Zhu, Yang, Chen, IEEE TIP 2021).

Pure PyTorch / NumPy / OpenCV; works in a notebook with no Prefect server.

>>> from eml_core import build_model, explain_pair, load_image
>>> model = build_model("mobilenet_v2", "gap_fc", embedding_dim=512)
>>> q = model.preprocessing(load_image("a.jpg").pixels)
>>> r = model.preprocessing(load_image("b.jpg").pixels)
>>> explanation = explain_pair(model, q, r)
>>> explanation.similarity, explanation.overall("query", bias=True).shape
"""

# The public names are imported on first use (PEP 562): ``import eml_core.results`` (the results I/O, which
# the dashboard and the study tooling read through) must not pull in torch and torchvision, seconds on a small
# machine, for a process that never builds a model.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eml_core.decomposition import PairExplanation, explain_pair, partial_similarity
    from eml_core.errors import (
                                 ArgumentError,
                                 EmlError,
                                 ImageError,
                                 ModelError,
                                 UnsupportedHeadError,
                                 WeightsUnavailableError,
    )
    from eml_core.gradcam import grad_cam, grad_cam_from_features
    from eml_core.heads import HEAD_KINDS, build_head
    from eml_core.images import LoadedImage, load_image
    from eml_core.models import (
                                 BACKBONES,
                                 EmbeddingModel,
                                 Preprocessing,
                                 build_model,
                                 inference_mode_of,
                                 load_model,
                                 model_from_spec,
                                 save_model,
    )
    from eml_core.position_embeddings import PositionEmbeddings
    from eml_core.presentation import normalise, overlay, present, rectify, top_fraction_mask, upsample

# No exported name may be the name of a submodule: importing `eml_core.position_embeddings` (the module) sets
# the package attribute of that name, so a lazily exported function of the same name would be the function or
# the module depending on what was imported first. The function is `eml_core.position_embeddings.position_embeddings`.
_EXPORTS = {
    "PairExplanation": "eml_core.decomposition",
    "explain_pair": "eml_core.decomposition",
    "partial_similarity": "eml_core.decomposition",
    "ArgumentError": "eml_core.errors",
    "EmlError": "eml_core.errors",
    "ImageError": "eml_core.errors",
    "ModelError": "eml_core.errors",
    "UnsupportedHeadError": "eml_core.errors",
    "WeightsUnavailableError": "eml_core.errors",
    "grad_cam": "eml_core.gradcam",
    "grad_cam_from_features": "eml_core.gradcam",
    "HEAD_KINDS": "eml_core.heads",
    "build_head": "eml_core.heads",
    "LoadedImage": "eml_core.images",
    "load_image": "eml_core.images",
    "BACKBONES": "eml_core.models",
    "EmbeddingModel": "eml_core.models",
    "Preprocessing": "eml_core.models",
    "build_model": "eml_core.models",
    "inference_mode_of": "eml_core.models",
    "load_model": "eml_core.models",
    "model_from_spec": "eml_core.models",
    "save_model": "eml_core.models",
    "PositionEmbeddings": "eml_core.position_embeddings",
    "normalise": "eml_core.presentation",
    "overlay": "eml_core.presentation",
    "present": "eml_core.presentation",
    "rectify": "eml_core.presentation",
    "top_fraction_mask": "eml_core.presentation",
    "upsample": "eml_core.presentation",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eml_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ArgumentError", "BACKBONES", "EmbeddingModel", "EmlError", "HEAD_KINDS", "ImageError", "LoadedImage",
    "ModelError", "PairExplanation", "PositionEmbeddings", "Preprocessing", "UnsupportedHeadError",
    "WeightsUnavailableError", "build_head", "build_model", "explain_pair", "grad_cam", "grad_cam_from_features",
    "inference_mode_of", "load_image", "load_model", "model_from_spec", "normalise", "overlay",
    "partial_similarity", "present", "rectify", "save_model", "top_fraction_mask",
    "upsample",
]
