"""The backbone half of every explanation: image batches in, feature maps A (B, C, h, w) out.

Shared by the decomposition and the Grad-CAM baselines, so neither imports the
other's internals. Inputs are checked here once: a tensor of the right rank,
finite pixels, an image at least as large as the backbone's stride.

The backbone runs under ``torch.inference_mode`` (no autograd bookkeeping at all; the maps it returns are
*inference tensors*: callers that differentiate through a head clone them first, as Grad-CAM does). With
``precision="bfloat16"`` or ``"float16"`` it runs under ``torch.autocast`` (the convolutions in that precision,
the returned map widened back to float32, so heads and the decomposition stay in float32); the effect on maps
and on Tables I/II is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from eml_core.errors import ArgumentError, ImageError
from eml_core.models import EmbeddingModel


def as_image_batch(images: torch.Tensor, argument: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise ArgumentError(argument, f"expected a tensor (B, 3, H, W) or (3, H, W), got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ArgumentError(argument, f"expected (B, 3, H, W) or (3, H, W), got shape {tuple(images.shape)}")
    # one reduction first (cheap); sum of finite pixel values cannot overflow float32 in practice
    if not torch.isfinite(images.sum()) and not torch.isfinite(images).all():
        raise ArgumentError(argument, "contains NaN or infinite pixel values")
    return images


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


PRECISIONS = ("float32", "bfloat16", "float16")


def backbone_precision(device: torch.device | str, precision: str = "float32"):
    """The context the backbone runs in: nothing for float32, else ``torch.autocast`` to that dtype."""
    if precision not in PRECISIONS:
        raise ArgumentError("precision", f"expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, precision))


def compute_feature_map(model: EmbeddingModel, images: torch.Tensor, source: str,
                        precision: str = "float32") -> torch.Tensor:
    """The backbone's feature map (float32), with a clear error when an image is too small for it."""
    model.check_input_size(images.shape[-2], images.shape[-1], source)
    try:
        with torch.inference_mode(), backbone_precision(images.device, precision):
            feature_map = model.features(images)
        if precision != "float32":
            with torch.inference_mode():
                feature_map = feature_map.float()
    except RuntimeError as error:
        raise ImageError(source, f"the backbone cannot process a {images.shape[-1]}x{images.shape[-2]} input "
                                 f"({str(error).splitlines()[0]})") from None
    if feature_map.dim() != 4 or feature_map.shape[-1] < 1 or feature_map.shape[-2] < 1:
        raise ImageError(source, f"the backbone returned shape {tuple(feature_map.shape)}, not a (B, C, h, w) "
                                 f"feature map; is the image smaller than the network stride?")
    return feature_map
