"""Hostile image files generated at test time (nothing third-party, nothing stored in the repository)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A ~400 KB PNG that declares width x height grey pixels (all zero, deflated): 400 million pixels."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))
    path.write_bytes(png)
    return path


def header_only_giant(path: Path) -> Path:
    """A PNG header declaring 60000 x 60000 RGB pixels, with no image data at all."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
                     + _png_chunk(b"IEND", b""))
    return path


def random_rgb(path: Path, size=(40, 56), seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def hostile_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """``{case: (file, expectation)}``; expectation ``error`` (refused with a clear message) or ``ok`` (an odd
    but legitimate file, converted explicitly)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    cases: dict[str, tuple[Path, str]] = {}
    good = random_rgb(folder / "good.jpg")
    jpeg = good.read_bytes()
    (folder / "empty.png").write_bytes(b"")
    cases["zero-byte file"] = (folder / "empty.png", "error")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    cases["truncated JPEG"] = (folder / "truncated.jpg", "error")
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png, format="PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[:200])
    cases["truncated PNG"] = (folder / "truncated.png", "error")
    cases["decompression bomb 20000x20000"] = (decompression_bomb(folder / "bomb.png"), "error")
    cases["header-only 60000x60000"] = (header_only_giant(folder / "giant.png"), "error")
    (folder / "text.jpg").write_text("<html>not an image</html>")
    cases["HTML named .jpg"] = (folder / "text.jpg", "error")
    (folder / "random.png").write_bytes(rng.bytes(2048))
    cases["random bytes named .png"] = (folder / "random.png", "error")
    (folder / "a_folder.jpg").mkdir(exist_ok=True)
    cases["a folder named .jpg"] = (folder / "a_folder.jpg", "error")
    cases["missing file"] = (folder / "missing.png", "error")
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(folder / "one_pixel.png")
    cases["1x1 image"] = (folder / "one_pixel.png", "ok")  # resized to the input size; localization leaves it out
    Image.fromarray(rng.integers(0, 256, (3, 4000, 3), dtype=np.uint8)).save(folder / "sliver.png")
    cases["3x4000 sliver"] = (folder / "sliver.png", "ok_or_error")
    Image.fromarray(rng.integers(0, 256, (40, 56, 4), dtype=np.uint8), "RGBA").convert("CMYK").save(
        folder / "cmyk.jpg")
    cases["CMYK JPEG"] = (folder / "cmyk.jpg", "ok")
    Image.fromarray(rng.random((40, 56)).astype(np.float32), "F").save(folder / "float.tif")
    cases["32-bit float TIFF (mode F)"] = (folder / "float.tif", "error")
    Image.fromarray(rng.integers(0, 2, (40, 56), dtype=bool)).save(folder / "bilevel.png")
    cases["1-bit PNG"] = (folder / "bilevel.png", "ok")
    palette = Image.fromarray(rng.integers(0, 4, (40, 56), dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(folder / "palette.png", transparency=0)
    cases["palette PNG with transparency"] = (folder / "palette.png", "ok")
    Image.fromarray(rng.integers(0, 256, (40, 56, 2), dtype=np.uint8), "LA").save(folder / "la.png")
    cases["grey + alpha PNG"] = (folder / "la.png", "ok")
    frames = [Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).convert("P") for _ in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    cases["animated GIF (first frame used)"] = (folder / "animated.gif", "ok")
    Image.fromarray(rng.integers(0, 65536, (40, 56), dtype=np.uint16)).save(folder / "sixteen.png")
    cases["16-bit PNG"] = (folder / "sixteen.png", "ok")
    return cases
