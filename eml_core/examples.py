"""A built-in example pair made from an image that ships inside an installed package.

The repository ships no third-party images. scikit-image's wheel bundles a few
public-domain / permissively licensed photographs (``skimage/data``); the example
pair is one of them (``chelsea.png``, a cat) and a deterministic second view of it
(mirrored, cropped to the cat's head and body, slightly rescaled), so the pair
is "the same object under augmentation", the situation metric learning models
are trained to call similar.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from eml_core.errors import EmlError


def packaged_image(name: str) -> Path:
    """Path of an image bundled in scikit-image's ``data`` folder (found without importing skimage)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise EmlError("the built-in example needs the scikit-image package (it ships the example photographs)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise EmlError(f"{path}: bundled example image missing from the installed scikit-image")
    return path


def write_example_pair(folder: str | Path) -> tuple[Path, Path]:
    """Write ``query.png`` and ``retrieved.png`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photo = np.asarray(Image.open(packaged_image("chelsea.png")).convert("RGB"))  # 300 x 451
    query = photo
    view = photo[20:290, 60:400][:, ::-1]  # crop around the cat, mirrored
    view = np.asarray(Image.fromarray(np.ascontiguousarray(view)).resize((300, 238), Image.Resampling.BILINEAR))
    query_path, retrieved_path = folder / "query.png", folder / "retrieved.png"
    Image.fromarray(query).save(query_path)
    Image.fromarray(view).save(retrieved_path)
    return query_path, retrieved_path
