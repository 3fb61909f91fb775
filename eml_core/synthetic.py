"""The embedded default dataset: objects composited onto backgrounds at known boxes.

The repository ships no third-party images, so the default data is *generated*,
deterministically from a seed, out of the photographs that ship inside the
installed scikit-image package (``skimage/data``). Each class is one object
(a photograph cut out by its alpha channel or an inscribed ellipse); each image
shows that object under augmentation — scale, position, horizontal flip, colour
gains — on a tinted texture background (brick, grass, gravel, ...). The object's
box is known exactly from its mask.

The output is written in the CUB-200-2011 layout, so the same loader
(:func:`eml_core.datasets.load_cub`) reads it, with the same split rules: by
default ``classes`` (the first half of the classes, 1-6 of 12, for training, the
others for evaluation), or ``official``, whose ``train_test_split.txt`` puts the
first half of each class's images in ``train`` and the rest in ``test``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from eml_core.examples import packaged_image

GENERATOR_VERSION = 1
DEFAULT_LOCATION = os.environ.get("EML_SYNTHETIC_DIR", "data/generated/synthetic")

# (class name, bundled file). RGBA files are cut out by their alpha channel, the rest by an ellipse.
OBJECTS = (
    ("astronaut", "astronaut.png"), ("cat", "chelsea.png"), ("coffee", "coffee.png"),
    ("colour_wheel", "color.png"), ("galaxies", "hubble_deep_field.jpg"), ("tissue", "ihc.png"),
    ("logo", "logo.png"), ("motorcycle", "motorcycle_left.png"), ("retina", "retina.jpg"),
    ("rocket", "rocket.jpg"), ("horse", "horse.png"), ("cameraman", "camera.png"),
)
BACKGROUNDS = ("brick.png", "grass.png", "gravel.png", "moon.png", "cell.png")


@dataclass(frozen=True)
class SyntheticConfig:
    classes: int = 12
    images_per_class: int = 16
    seed: int = 0
    min_size: int = 192
    max_size: int = 288
    min_scale: float = 0.4
    max_scale: float = 0.7
    version: int = GENERATOR_VERSION


def _object_cutout(file_name: str, class_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float image, boolean mask) of one object, at most 256 px on its longer side."""
    image = Image.open(packaged_image(file_name))
    image.thumbnail((256, 256), Image.Resampling.BILINEAR)
    if image.mode in ("RGBA", "LA"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        rgb, mask = rgba[..., :3], rgba[..., 3] > 0.5
        if mask.mean() > 0.98:  # opaque everywhere (the horse: black silhouette on white): cut out the dark shape
            mask = rgb.mean(-1) < 0.5
        if rgb[mask].std() < 0.05:  # a flat silhouette (the horse): give it a colour of its class
            hue = np.array([0.55, 0.35, 0.2]) if class_index % 2 else np.array([0.3, 0.3, 0.6])
            rgb = np.broadcast_to(hue, rgb.shape).astype(np.float32) * (0.7 + 0.3 * rgb)
    else:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        height, width = rgb.shape[:2]
        yy, xx = np.mgrid[0:height, 0:width]
        mask = ((xx + 0.5 - width / 2) / (width / 2)) ** 2 + ((yy + 0.5 - height / 2) / (height / 2)) ** 2 <= 1.0
    ys, xs = np.nonzero(mask)
    crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return np.ascontiguousarray(rgb[crop]), np.ascontiguousarray(mask[crop])


def _background(rng: np.random.Generator, textures: list[np.ndarray], height: int, width: int) -> np.ndarray:
    texture = textures[rng.integers(len(textures))]
    scale = max(height / texture.shape[0], width / texture.shape[1]) * rng.uniform(1.0, 1.6)
    size = (int(np.ceil(texture.shape[1] * scale)), int(np.ceil(texture.shape[0] * scale)))
    resized = np.asarray(Image.fromarray((texture * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR),
                         dtype=np.float32) / 255.0
    top = rng.integers(0, resized.shape[0] - height + 1)
    left = rng.integers(0, resized.shape[1] - width + 1)
    gray = resized[top:top + height, left:left + width]
    tint = rng.uniform(0.3, 1.0, size=3)
    return np.clip(0.15 + 0.7 * gray[..., None] * tint, 0, 1).astype(np.float32)


def _compose(rng: np.random.Generator, config: SyntheticConfig, cutout, textures):
    rgb, mask = cutout
    height = int(rng.integers(config.min_size, config.max_size + 1))
    width = int(rng.integers(config.min_size, config.max_size + 1))
    canvas = _background(rng, textures, height, width)
    longer = rng.uniform(config.min_scale, config.max_scale) * min(height, width)
    factor = longer / max(rgb.shape[:2])
    obj_w, obj_h = max(8, int(round(rgb.shape[1] * factor))), max(8, int(round(rgb.shape[0] * factor)))
    obj = np.asarray(Image.fromarray((rgb * 255).astype(np.uint8)).resize((obj_w, obj_h), Image.Resampling.BILINEAR),
                     dtype=np.float32) / 255.0
    obj_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((obj_w, obj_h),
                                                                              Image.Resampling.NEAREST)) > 127
    if rng.random() < 0.5:
        obj, obj_mask = obj[:, ::-1], obj_mask[:, ::-1]
    gains = rng.uniform(0.75, 1.25, size=3) * rng.uniform(0.85, 1.15)
    obj = np.clip(obj * gains, 0, 1)
    top = int(rng.integers(0, height - obj_h + 1))
    left = int(rng.integers(0, width - obj_w + 1))
    region = canvas[top:top + obj_h, left:left + obj_w]
    region[obj_mask] = obj[obj_mask]
    ys, xs = np.nonzero(obj_mask)
    box_xywh = (left + int(xs.min()), top + int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return (canvas * 255).round().astype(np.uint8), box_xywh


def generate_synthetic_dataset(folder: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write the dataset (CUB layout) into ``folder``/CUB_200_2011; returns that path. Deterministic."""
    if not 1 <= config.classes <= len(OBJECTS):
        raise ValueError(f"classes must be in [1, {len(OBJECTS)}], got {config.classes}")
    root = Path(folder) / "CUB_200_2011"
    staging = Path(folder) / ".CUB_200_2011.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    rng = np.random.default_rng(config.seed)
    textures = [np.asarray(Image.open(packaged_image(name)).convert("L"), dtype=np.float32) / 255.0
                for name in BACKGROUNDS]
    lines: dict[str, list[str]] = {"images": [], "boxes": [], "labels": [], "split": [], "classes": []}
    image_id = 0
    for class_index, (name, file_name) in enumerate(OBJECTS[: config.classes]):
        label = class_index + 1
        class_folder = f"{label:03d}.{name}"
        (staging / "images" / class_folder).mkdir()
        lines["classes"].append(f"{label} {class_folder}")
        cutout = _object_cutout(file_name, class_index)
        for index in range(config.images_per_class):
            image_id += 1
            pixels, (x, y, w, h) = _compose(rng, config, cutout, textures)
            relative = f"{class_folder}/{name}_{index:04d}.png"
            Image.fromarray(pixels).save(staging / "images" / relative)
            lines["images"].append(f"{image_id} {relative}")
            lines["boxes"].append(f"{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
            lines["labels"].append(f"{image_id} {label}")
            lines["split"].append(f"{image_id} {1 if index < config.images_per_class // 2 else 0}")
    for key, file_name in (("images", "images.txt"), ("boxes", "bounding_boxes.txt"),
                           ("labels", "image_class_labels.txt"), ("split", "train_test_split.txt"),
                           ("classes", "classes.txt")):
        (staging / file_name).write_text("\n".join(lines[key]) + "\n")
    (staging / "generator.json").write_text(json.dumps(asdict(config), indent=2))
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)  # atomic: a half-written dataset never looks complete
    return root


def ensure_synthetic_dataset(folder: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Generate the dataset unless ``folder`` already holds one made with the same config."""
    root = Path(folder) / "CUB_200_2011"
    stamp = root / "generator.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(config):
        return root
    return generate_synthetic_dataset(folder, config)
