"""eml_core: activation decomposition for deep metric learning (Zhu, Yang, Chen, IEEE TIP 2021).

Pure PyTorch / NumPy / OpenCV; works in a notebook with no Prefect server.

>>> from eml_core import build_model, explain_pair, load_image
>>> model = build_model("mobilenet_v2", "gap_fc", embedding_dim=512)
>>> q = model.preprocessing(load_image("a.jpg").pixels)
>>> r = model.preprocessing(load_image("b.jpg").pixels)
>>> explanation = explain_pair(model, q, r)
>>> explanation.similarity, explanation.overall("query", bias=True).shape
"""

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
from eml_core.position_embeddings import PositionEmbeddings, position_embeddings
from eml_core.presentation import normalise, overlay, present, rectify, top_fraction_mask, upsample

__all__ = [
    "ArgumentError", "BACKBONES", "EmbeddingModel", "EmlError", "HEAD_KINDS", "ImageError", "LoadedImage",
    "ModelError", "PairExplanation", "PositionEmbeddings", "Preprocessing", "UnsupportedHeadError",
    "WeightsUnavailableError", "build_head", "build_model", "explain_pair", "grad_cam", "grad_cam_from_features",
    "inference_mode_of", "load_image", "load_model", "model_from_spec", "normalise", "overlay",
    "partial_similarity", "position_embeddings", "present", "rectify", "save_model", "top_fraction_mask",
    "upsample",
]
