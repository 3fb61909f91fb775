"""Hostile and odd image files through `eml explain` and `load_image` (issue 7, item 4)."""

from __future__ import annotations

import pytest

from eml_core import ImageError, load_image
from tests.hostile.harness import record, run_cli
from tests.hostile.images import hostile_images, random_rgb

TINY = "tests.conftest:tiny"


def test_every_hostile_image_is_one_clear_error_or_an_explicit_conversion(tmp_path):
    cases = hostile_images(tmp_path / "images")
    good = random_rgb(tmp_path / "partner.png")
    for case, (path, expectation) in cases.items():
        try:
            image = load_image(path)
        except ImageError as error:
            assert expectation in ("error", "ok_or_error"), (case, error)
            assert str(path) in str(error) and "\n" not in str(error), (case, error)
            record("load_image", case, "clean_error")
        else:
            assert expectation in ("ok", "ok_or_error"), case
            assert image.pixels.shape[0] == 3 and image.pixels.isfinite().all(), case
            record("load_image", case, "handled")
        argv = ["explain", str(path), str(good), "--model", TINY, "--out", str(tmp_path / "out")]
        if expectation == "error":
            result = run_cli(argv, entry_point="eml explain (image files)", case=case)
            assert str(path) in result.err, (case, result.err)
        else:
            from flows.cli import main

            code = main(argv)
            assert code in ((0,) if expectation == "ok" else (0, 2)), case
            record("eml explain (image files)", case, "handled" if code == 0 else "clean_error")


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = random_rgb(tmp_path / "small.png", size=(40, 56))
    monkeypatch.setenv("EML_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageError, match=r"declares 56x40 = 2,240 pixels, over the limit of 1,000"):
        load_image(path)
