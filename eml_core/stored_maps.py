"""Raw overall maps stored with a run's items, so a reviewer can look at any item's maps without the model.

A map is kept at **feature resolution** (the backbone's h x w, e.g. 7 x 7), raw and signed, exactly as the
method computed it, in one row of the ``localization_maps`` table per (pair, side, method):

* ``scale`` = max |m| over the map's finite values (1.0 when there is none or it is 0), and
* ``map`` = the bytes of (m / scale) as little-endian float16, row-major (``map_height`` x ``map_width``).

Dividing by ``scale`` first keeps float16 in range whatever the method's units (a dot-product Grad-CAM can
reach values far beyond float16's 65504), and leaves 11 significant bits for the shape of the map, far finer
than any threshold grid reads it. ``decode`` gives back m (to float16 rounding); non-finite values survive as
such, so a flagged map stays flagged.

Presentation (rectify, upsample to the image size, divide by the max) is :mod:`eml_core.presentation`'s, the
same as for the localization itself.
"""

from __future__ import annotations

import numpy as np

DTYPE = np.dtype("<f2")


def encode(raw) -> dict:
    """``{"map_height", "map_width", "scale", "map"}`` of one raw (h, w) map (a tensor or an array)."""
    values = raw.detach().float().cpu().numpy() if hasattr(raw, "detach") else np.asarray(raw, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"a stored map is 2-D (h, w), got shape {values.shape}")
    finite = np.abs(values[np.isfinite(values)])
    scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return {"map_height": int(values.shape[0]), "map_width": int(values.shape[1]), "scale": scale,
            "map": np.ascontiguousarray(values / scale, dtype=DTYPE).tobytes()}


def decode(row) -> np.ndarray:
    """The raw map (float32, ``map_height`` x ``map_width``) of one stored row (a dict or a table row)."""
    height, width = int(row["map_height"]), int(row["map_width"])
    values = np.frombuffer(row["map"], dtype=DTYPE)
    if values.size != height * width:
        raise ValueError(f"stored map holds {values.size} values, expected {height} x {width}")
    return values.reshape(height, width).astype(np.float32) * np.float32(row["scale"])
