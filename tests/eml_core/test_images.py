"""Image loading: explicit conversions and clear errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eml_core import ImageError, load_image


def _save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_rgb_png_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = load_image(_save(tmp_path / "rgb.png", array))
    assert image.size == (5, 7) and image.pixels.shape == (3, 5, 7)
    assert (image.to_uint8() == array).all()


def test_grayscale_becomes_three_equal_channels(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    image = load_image(_save(tmp_path / "gray.png", array))
    assert image.original_mode == "L"
    assert (image.pixels[0] == image.pixels[1]).all() and (image.pixels[1] == image.pixels[2]).all()


def test_rgba_drops_alpha_and_says_so(tmp_path):
    array = np.zeros((3, 3, 4), dtype=np.uint8)
    array[..., 0], array[..., 3] = 200, 10
    image = load_image(_save(tmp_path / "rgba.png", array))
    assert image.dropped_alpha and image.pixels.shape == (3, 3, 3)
    assert image.to_uint8()[0, 0, 0] == 200


def test_sixteen_bit_png_uses_the_full_range(tmp_path):
    array = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    image = load_image(path)
    assert image.pixels.shape == (3, 1, 3)
    assert image.pixels[0, 0].tolist() == pytest.approx([0.0, 32768 / 65535, 1.0], abs=1e-6)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: file does not exist"):
        load_image(tmp_path / "nope.png")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is text")
    with pytest.raises(ImageError, match=r"notes\.jpg: not a readable image"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / "full.jpg"
    Image.fromarray(array).save(full, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated or corrupt"):
        load_image(cut)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="is not a file"):
        load_image(tmp_path)
