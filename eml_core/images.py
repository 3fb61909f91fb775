"""Reading images into float tensors, with clear errors for files that cannot be used.

Conversions are explicit and recorded rather than silent:

* grayscale (``L``, ``1``) is repeated to three channels;
* palette (``P``) images are expanded to RGB(A) first;
* an alpha channel (``RGBA``, ``LA``) is dropped (pixels keep their colour, the
  transparency is ignored), and :attr:`LoadedImage.dropped_alpha` says so;
* 16-bit images (``I;16``, ``I``) are scaled by 1/65535, not clipped at 255.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from eml_core.errors import ImageError

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


@dataclass(frozen=True)
class LoadedImage:
    """An image as a float tensor ``(3, H, W)`` in [0, 1], RGB order."""

    pixels: torch.Tensor
    path: str
    original_mode: str
    dropped_alpha: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])

    def to_uint8(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 array, for overlays."""
        # contiguous: OpenCV drawing functions refuse the strided view a permute would give
        return np.ascontiguousarray((self.pixels.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Read an image file into a :class:`LoadedImage`.

    Raises :class:`~eml_core.errors.ImageError` naming the file for a missing,
    unreadable, truncated or empty image, or an unsupported pixel mode.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "file does not exist")
    if not path.is_file():
        raise ImageError(path, "is not a file")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later inside torch
            mode = image.mode
            array, dropped_alpha = _to_rgb_array(image, path)
    except UnidentifiedImageError:
        raise ImageError(path, "not a readable image (unknown or corrupt format)") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(path, f"truncated or corrupt image data ({error})") from None
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(path, "image has zero width or height")
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()
    return LoadedImage(pixels=pixels, path=str(path), original_mode=mode, dropped_alpha=dropped_alpha)


def _to_rgb_array(image: Image.Image, path: Path) -> tuple[np.ndarray, bool]:
    """Convert a decoded PIL image to an ``(H, W, 3)`` float32 array in [0, 1]."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(image, dtype=np.float64) / 65535.0
        gray = np.clip(gray, 0.0, 1.0).astype(np.float32)
        return np.repeat(gray[:, :, None], 3, axis=2), False
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    dropped_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La")
    if mode in ("RGB", "RGBA", "RGBa", "L", "LA", "La", "1", "CMYK", "YCbCr", "RGBX"):
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return rgb, dropped_alpha
    raise ImageError(path, f"unsupported pixel mode {mode!r} (expected RGB, grayscale, palette or 16-bit)")
