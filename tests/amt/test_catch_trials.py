"""Catch trials of overall-map studies: real maps' highlights, moved on and off the object, never round blobs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from amt.stimuli import CATCH_INSIDE, CATCH_OUTSIDE, catch_highlights, highlight_mask, image_heat, place_highlight
from eml_core.localization import pair_maps
from tests.conftest import tiny_model

FRACTION = 0.02


def _components(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def _share_in_box(mask: np.ndarray, box) -> float:
    ys, xs = np.nonzero(mask)
    inside = (xs + 0.5 >= box[0]) & (xs + 0.5 < box[2]) & (ys + 0.5 >= box[1]) & (ys + 0.5 < box[3])
    return float(inside.mean())


def _crop(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


@pytest.mark.parametrize("pair_index", [0, 3])
def test_catch_highlights_are_real_maps_moved_on_and_off_the_object(tiny_synthetic, pair_index):
    model = tiny_model("gap_fc")
    item, partner = tiny_synthetic.items[pair_index], tiny_synthetic.items[pair_index + 1]
    maps = pair_maps(model, item.path, partner.path, ("decomposition", "gradcam"))
    heats = [image_heat(item.path, maps[m]["query"][0]) for m in ("decomposition", "gradcam")]
    highlights = catch_highlights(*heats, item.box, FRACTION)
    assert highlights is not None
    good, bad = highlights
    assert _share_in_box(good, item.box) >= CATCH_INSIDE
    assert _share_in_box(bad, item.box) <= CATCH_OUTSIDE  # a clearly wrong region: off the object
    expected_area = math.ceil(FRACTION * good.size)
    for placed, heat in ((good, heats[0]), (bad, heats[1])):
        real = highlight_mask(heat, FRACTION)
        # the highlight is the real map's, moved whole: same pixels count, same shape, same components
        assert placed.sum() == real.sum() == expected_area
        assert np.array_equal(_crop(placed), _crop(real))
        assert _components(placed) == _components(real)
    # comparable shape statistics between the good and the bad robot: equal areas, real (not synthetic) shapes
    assert good.sum() / bad.sum() == 1.0


def test_no_room_off_the_object_gives_no_catch_highlight():
    heat = np.zeros((50, 50), dtype=np.float32)
    heat[20:30, 20:30] = 1.0
    assert catch_highlights(heat, heat, (0, 0, 50, 50), FRACTION) is None   # the object fills the frame
    assert catch_highlights(np.zeros_like(heat), heat, (10, 10, 40, 40), FRACTION) is None  # nothing to highlight
    placed, share = place_highlight(heat > 0, (0, 0, 20, 20), inside=False)
    assert share == 0.0 and placed.sum() == 100 and np.array_equal(_crop(placed), np.ones((10, 10), bool))
