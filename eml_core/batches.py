"""From dataset items to network inputs: decode, preprocess, check, and group into batches.

Unreadable or unusable images become ``errors`` records naming the file; the
rest go on. A model without a fixed input size sees images at their own sizes,
so only equal shapes are stacked into one batch.
"""

from __future__ import annotations

import torch

from eml_core.datasets import ErrorRecord, Item
from eml_core.errors import EmlError
from eml_core.images import load_image
from eml_core.models import EmbeddingModel


def load_batch(items: list[Item], model: EmbeddingModel, stage: str, errors: list[ErrorRecord]):
    """Preprocessed inputs for the readable items; unreadable ones go to ``errors``.

    Returns ``(kept_items, tensors)``, where tensors is a list of (3, H, W) inputs.
    """
    kept, tensors = [], []
    for item in items:
        try:
            pixels = load_image(item.path).pixels
            tensor = model.preprocessing(pixels)
            model.check_input_size(tensor.shape[-2], tensor.shape[-1], item.path)
        except EmlError as error:
            errors.append(ErrorRecord(stage, item.image_id, item.path, None, str(error)))
            continue
        kept.append(item)
        tensors.append(tensor)
    return kept, tensors


def equal_shape_batches(tensors: list[torch.Tensor], batch_size: int):
    """Group consecutive same-shaped tensors into batches (fixed input size -> full batches)."""
    start = 0
    while start < len(tensors):
        stop = start + 1
        while stop < len(tensors) and stop - start < batch_size and tensors[stop].shape == tensors[start].shape:
            stop += 1
        yield start, torch.stack(tensors[start:stop])
        start = stop
