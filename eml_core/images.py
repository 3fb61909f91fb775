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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from eml_core.errors import ImageError

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

MAX_PIXELS_VARIABLE = "EML_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000  # ~7000 x 7000: 600 MB as a float tensor; datasets and panoramas are far smaller


def max_image_pixels() -> int:
    """The largest image (width x height) eml decodes: ``EML_MAX_IMAGE_PIXELS`` or 50 million.

    A hostile file can declare 20000 x 20000 pixels in a few hundred bytes
    (a decompression bomb); the header is checked against this limit before
    anything is decoded.
    """
    try:
        return max(1, int(os.environ.get(MAX_PIXELS_VARIABLE, DEFAULT_MAX_PIXELS)))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def check_pixel_count(path: object, width: int, height: int) -> None:
    """Refuse an image whose header declares more pixels than :func:`max_image_pixels` (before decoding)."""
    limit = max_image_pixels()
    if width * height > limit:
        raise ImageError(path, f"image declares {width}x{height} = {width * height:,} pixels, over the limit of "
                               f"{limit:,} ({MAX_PIXELS_VARIABLE}); refusing to decode it "
                               f"(possible decompression bomb)")


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
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_pixel_count(path, *image.size)
                image.load()  # decode now: a truncated file fails here, not later inside torch
                mode = image.mode
                array, dropped_alpha = _to_rgb_array(image, path)
    except UnidentifiedImageError:
        raise ImageError(path, "not a readable image (unknown or corrupt format)") from None
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(path, f"refusing to decode a possible decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError, MemoryError, EOFError) as error:
        raise ImageError(path, f"truncated or corrupt image data ({type(error).__name__}: {error})") from None
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
