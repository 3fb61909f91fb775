"""Raw maps stored with a run's items: float16 after dividing by the largest |value|, back to the raw map."""

from __future__ import annotations

import numpy as np
import pytest

from eml_core.stored_maps import decode, encode


@pytest.mark.parametrize("scale", [1e-6, 1.0, 3e3, 1e7])
def test_roundtrip_keeps_the_map_to_float16_precision_whatever_its_units(scale):
    raw = (np.random.default_rng(0).normal(size=(7, 9)) * scale).astype(np.float32)
    row = encode(raw)
    assert (row["map_height"], row["map_width"]) == (7, 9) and len(row["map"]) == 7 * 9 * 2
    back = decode(row)
    assert back.dtype == np.float32 and back.shape == (7, 9)
    assert np.abs(back - raw).max() <= 2 ** -11 * np.abs(raw).max()  # float16: 11 significant bits
    assert np.array_equal(np.argmax(back), np.argmax(raw))


def test_zero_and_non_finite_maps_survive_as_such():
    assert encode(np.zeros((3, 3)))["scale"] == 1.0 and not decode(encode(np.zeros((3, 3)))).any()
    raw = np.array([[1.0, np.nan], [np.inf, -2.0]])
    back = decode(encode(raw))
    assert np.isnan(back[0, 1]) and np.isinf(back[1, 0]) and back[1, 1] == -2.0 and back[0, 0] == 1.0


def test_a_truncated_map_is_refused():
    row = encode(np.ones((4, 4)))
    row["map"] = row["map"][:-2]
    with pytest.raises(ValueError, match="holds 15 values, expected 4 x 4"):
        decode(row)


def test_localization_stores_the_raw_map_of_every_scored_side_and_method(tiny_synthetic):
    from eml_core.localization import localize_pairs, pair_maps
    from eml_core.retrieval import same_class_pairs
    from tests.conftest import tiny

    model = tiny()
    pairs, _ = same_class_pairs(tiny_synthetic.split("test"), mode="random", seed=0)
    maps: list[dict] = []
    rows, errors = localize_pairs(model, pairs[:3], methods=("decomposition", "gradcam_nonorm"), thresholds=(0.5,),
                                  sides=("query", "retrieved"), maps_out=maps)
    assert not errors and len(maps) == 3 * 2 * 2 and len(rows) == 3 * 2 * 2
    stored = {(m["pair_id"], m["side"], m["method"]): m for m in maps}
    pair = pairs[0]
    direct = pair_maps(model, pair.query.path, pair.retrieved.path, ("decomposition", "gradcam_nonorm"))
    for method in ("decomposition", "gradcam_nonorm"):
        for side, item in (("query", pair.query), ("retrieved", pair.retrieved)):
            row = stored[(pair.pair_id, side, method)]
            assert (row["image_height"], row["image_width"]) == item.size and row["image_id"] == item.image_id
            raw = direct[method][side][0].numpy()
            assert np.allclose(decode(row), raw, atol=1e-3 * np.abs(raw).max())
