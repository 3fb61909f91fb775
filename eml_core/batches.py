"""From dataset items to network inputs: decode, preprocess, check, and group into batches.

Unreadable or unusable images become ``errors`` records naming the file; the
rest go on. A model without a fixed input size sees images at their own sizes,
so only equal shapes are stacked into one batch.

How many images go into one batch depends on the device (:func:`default_batch_size`); a flow's
``batch_size`` overrides it.
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


CPU_BATCH = 32                 # larger CPU batches are no faster per image and only hold more memory
GPU_IMAGES_PER_GIB = 8         # at 224 x 224: room for the activations of a ResNet-50-sized backbone, with margin
GPU_BATCH_RANGE = (16, 512)


def default_batch_size(device: str | torch.device, input_size: tuple[int, int] | None = (224, 224)) -> int:
    """Images per batch on ``device`` when the configuration names none.

    CPU: 32. CUDA: 8 images per GiB of the device's total memory for 224 x 224 inputs, scaled by
    224 * 224 / (H * W) for other fixed input sizes (activations grow with the pixel count; ``None``, images at
    their own sizes, counts as 224 x 224), within [16, 512]: 64 on an 8 GiB card, 512 on a 80 GiB one.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_BATCH
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    pixels = (input_size[0] * input_size[1]) if input_size else 224 * 224
    low, high = GPU_BATCH_RANGE
    return int(min(high, max(low, GPU_IMAGES_PER_GIB * gib * 224 * 224 / pixels)))
