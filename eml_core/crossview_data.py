r"""Cross-view (street-to-aerial) datasets: CVUSA and CVACT loaders, and the embedded generated pairs.

A :class:`CrossViewPair` is a street-view panorama and the aerial image centred
on the spot where it was taken, north up, orientation-aligned (angle
conventions: :mod:`eml_core.orientation`). Loaders never stop at the first bad
line: every problem becomes an :class:`~eml_core.datasets.ErrorRecord` naming
the file and line, the pair is left out, and the rest loads.

Layouts:

* **CVUSA** (:func:`load_cvusa`), as distributed: ``splits/*.csv`` (official
  ``train-19zl.csv`` and ``val-19zl.csv``; the split's name is the file name
  up to its first ``-``), rows ``aerial,panorama,annotation`` relative to the
  dataset folder (``bingmap/19/<id>.jpg``, ``streetview/panos/<id>.jpg``,
  ``annotations/<id>.png``; the annotation is optional and unused: a missing
  one is a warning). Panoramas are 1232x224 (aspect 5.5), aerial images
  750x750. ``root`` is the ``CVUSA`` folder or the folder holding it.
* **CVACT** (:func:`load_cvact`): ``streetview/<id>_grdView.jpg`` with
  ``satview_polish/<id>_satView_polish.jpg`` (the ANU release; its split file
  ``ACT_data.mat`` is not read: every pair is in split ``all``), or a folder
  holding one ``pano_img.png`` / ``sat_img.png`` pair (OriCNN's sample).
  CVACT panoramas are full equirectangular spheres (1664x832, aspect 2): the
  top quarter is sky, the bottom quarter the ground under the car. They are
  **cropped to the middle half of the rows** ([H/4, 3H/4), i.e. elevations
  from +45 to -45 degrees; rows 208-623 of 832) before being resized to the
  panorama input size, as OriCNN's CVACT loader does (``panoCropPixels = 832 / 2``
  centred, then resized to 1232x224). Pixel coordinates of a CVACT panorama
  in results are coordinates of the cropped image.

Checks at load time (from the image headers, nothing decoded): both files
exist and are readable images inside the dataset folder; the panorama has the
dataset's aspect ratio (+-5%; a 360-degree panorama is far wider than tall, so
a swapped or wrong file is caught); the aerial image is square (rotation about
its centre needs it). Pair ids are the panorama's file stem; a repeated id is
an error (the first is kept).

The **embedded default pairs** (:func:`generate_crossview_dataset`) are
generated from photographs and textures that ship inside scikit-image: an
aerial image is a tinted texture with roads and 3-5 distinct landmarks (discs
cut from different photographs) at random azimuths and distances around the
centre, and its panorama is the aerial image's inverse polar transform
(:func:`polar_panorama`): column u looks along azimuth phi_s(u), row v at
distance ``R (1 - (v + 0.5) / H)`` from the centre (the top row on the
inscribed circle, the bottom row at the centre), so every pair is exactly
aligned. They are written in the CVUSA layout, read by :func:`load_cvusa`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eml_core.datasets import DatasetError, ErrorRecord, _inside, _listed_image, _text_lines
from eml_core.errors import ArgumentError, ImageError
from eml_core.examples import packaged_image
from eml_core.images import load_image
from eml_core.orientation import aerial_point, panorama_azimuth

CVUSA_PANORAMA_ASPECT = 1232 / 224      # 5.5
CVACT_PANORAMA_ASPECT = 2.0              # full equirectangular sphere
CVACT_PANORAMA_ROWS = (0.25, 0.75)       # middle half of the sphere's rows (OriCNN)
ASPECT_TOLERANCE = 0.05
STAGE = "load_dataset"


@dataclass(frozen=True)
class CrossViewPair:
    """One aligned (panorama, aerial) pair.

    ``panorama_size`` is (height, width) after ``panorama_rows`` (a crop
    ``[top, bottom)`` of the file's rows, CVACT) is applied; ``aerial_size`` the
    aerial file's (height, width). ``azimuth_offset``: the aerial azimuth seen
    by panorama column u is ``phi_s(u) + azimuth_offset`` (0 for CVUSA by the
    paper's convention), so a rotation theta has ground truth
    ``theta + azimuth_offset``.
    """

    pair_id: str
    panorama: str
    aerial: str
    split: str
    panorama_size: tuple[int, int]
    aerial_size: tuple[int, int]
    relative_panorama: str
    relative_aerial: str
    annotation: str | None = None
    panorama_rows: tuple[int, int] | None = None
    azimuth_offset: float = 0.0


@dataclass
class CrossViewDataset:
    name: str
    root: str
    pairs: list[CrossViewPair]
    errors: list[ErrorRecord] = field(default_factory=list)

    def split(self, split: str) -> list[CrossViewPair]:
        return [pair for pair in self.pairs if pair.split == split]

    @property
    def splits(self) -> list[str]:
        return sorted({pair.split for pair in self.pairs})

    def fingerprint(self) -> str:
        """SHA-256 over every pair's ids, relative paths, file sizes on disk, split and crop."""
        digest = hashlib.sha256()
        for pair in sorted(self.pairs, key=lambda p: p.pair_id):
            sizes = []
            for path in (pair.panorama, pair.aerial):
                try:
                    sizes.append(Path(path).stat().st_size)
                except OSError:
                    sizes.append(-1)
            record = [pair.pair_id, pair.relative_panorama, pair.relative_aerial, sizes, pair.split,
                      pair.panorama_rows, pair.azimuth_offset]
            digest.update(json.dumps(record).encode())
        return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# shape checks shared by the loaders and by pixel loading


def panorama_shape_problem(size: tuple[int, int], aspect: float | None, tolerance: float = ASPECT_TOLERANCE
                           ) -> str | None:
    """Why a panorama of ``size`` (height, width) is unusable, or None."""
    height, width = size
    if aspect is None:
        return None
    actual = width / height
    if abs(actual / aspect - 1.0) > tolerance:
        return (f"panorama is {width}x{height} (aspect {actual:.2f}), expected a 360-degree panorama of aspect "
                f"{aspect:.2f} (+-{tolerance:.0%}); is it the aerial image, or a cropped view?")
    return None


def aerial_shape_problem(size: tuple[int, int]) -> str | None:
    """Why an aerial image of ``size`` (height, width) is unusable (not square), or None."""
    height, width = size
    if height != width:
        return (f"aerial image is {width}x{height}, not square: the orientation convention needs a north-up "
                f"image centred on the panorama's location")
    return None


def crop_rows(height: int, fractions: tuple[float, float]) -> tuple[int, int]:
    """Row range ``[top, bottom)`` of a crop given as fractions of the height (``(0.25, 0.75)``: 208-624 of 832)."""
    top, bottom = int(round(height * fractions[0])), int(round(height * fractions[1]))
    if not 0 <= top < bottom <= height:
        raise ArgumentError("panorama_rows", f"fractions {fractions} give no rows of a {height}-row panorama")
    return top, bottom


# ---------------------------------------------------------------------------------------------
# CVUSA


def cvusa_root(root: str | Path) -> Path:
    root = Path(root)
    if not (root / "splits").is_dir() and (root / "CVUSA" / "splits").is_dir():
        return root / "CVUSA"
    return root


def split_name(csv_file: Path) -> str:
    """``train-19zl.csv`` -> ``train``."""
    return csv_file.stem.split("-", 1)[0]


def load_cvusa(root: str | Path, splits=None, name: str = "cvusa",
               panorama_aspect: float | None = CVUSA_PANORAMA_ASPECT,
               aspect_tolerance: float = ASPECT_TOLERANCE) -> CrossViewDataset:
    """Load a CVUSA folder (official layout).

    ``splits``: None for every ``splits/*.csv``, or names (``"val"`` reads
    ``splits/val-19zl.csv``) or file names (``"val-19zl.csv"``). A requested
    split file that is missing or empty is an error row, not an exception; a
    missing ``splits`` folder raises :class:`~eml_core.datasets.DatasetError`.
    """
    root = cvusa_root(root)
    folder = root / "splits"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: CVUSA split folder is missing (expected the official layout: splits/*.csv, "
                           f"bingmap/19/, streetview/panos/)")
    errors: list[ErrorRecord] = []
    if splits is None:
        files = sorted(folder.glob("*.csv"))
        if not files:
            errors.append(ErrorRecord(STAGE, None, str(folder), None, "no split files (*.csv) in the splits folder"))
    else:
        names = [splits] if isinstance(splits, str) else list(splits)
        files = [folder / (s if s.endswith(".csv") else f"{s}-19zl.csv") for s in names]
    pairs: list[CrossViewPair] = []
    seen: dict[str, str] = {}
    for csv_file in files:
        if not csv_file.is_file():
            errors.append(ErrorRecord(STAGE, None, str(csv_file), None, "split file does not exist"))
            continue
        before = len(pairs) + len(errors)
        listed = _read_split(root, csv_file, split_name(csv_file), panorama_aspect, aspect_tolerance, pairs, errors,
                             seen)
        if listed == 0 and len(pairs) + len(errors) == before:
            errors.append(ErrorRecord(STAGE, None, str(csv_file), None, "split file lists no pairs"))
    return CrossViewDataset(name, str(root), pairs, errors)


def _read_split(root: Path, csv_file: Path, split: str, aspect, tolerance, pairs, errors, seen) -> int:
    """Append the usable pairs of one split file; returns how many non-blank lines it has."""
    listed = 0
    for number, line in _text_lines(csv_file, STAGE, errors):
        listed += 1
        fields = [f.strip() for f in next(csv.reader([line]))] if line.strip() else []
        if len(fields) == 3 and not fields[2]:
            fields = fields[:2]
        if len(fields) not in (2, 3) or not all(fields):
            errors.append(ErrorRecord(STAGE, None, str(csv_file), number,
                                      f"expected 'aerial,panorama[,annotation]', found {len(fields)} field(s): "
                                      f"{line.strip()[:80]!r}"))
            continue
        relative_aerial, relative_panorama = fields[0], fields[1]
        pair_id = Path(relative_panorama).stem
        pair = _checked_pair(root, pair_id, relative_panorama, relative_aerial, split, aspect, tolerance,
                             str(csv_file), number, errors, annotation=fields[2] if len(fields) == 3 else None)
        if pair is None:
            continue
        if pair_id in seen:
            errors.append(ErrorRecord(STAGE, pair_id, str(csv_file), number,
                                      f"pair id {pair_id} is listed again (first in {seen[pair_id]}); left out"))
            continue
        seen[pair_id] = f"{csv_file.name} line {number}"
        pairs.append(pair)
    return listed


def _checked_pair(root: Path, pair_id: str, relative_panorama: str, relative_aerial: str, split: str, aspect,
                  tolerance, listed_in: str, line: int | None, errors: list[ErrorRecord], annotation: str | None = None,
                  panorama_rows: tuple[float, float] | None = None, azimuth_offset: float = 0.0
                  ) -> CrossViewPair | None:
    sizes = {}
    for role, relative in (("panorama", relative_panorama), ("aerial", relative_aerial)):
        size = _listed_image(root, relative, STAGE, pair_id, errors, listed_in, line, what=role,
                             consequence="pair left out")
        if size is None:
            return None
        sizes[role] = size
    problem = panorama_shape_problem(sizes["panorama"], aspect, tolerance)
    if problem:
        errors.append(ErrorRecord(STAGE, pair_id, str(root / relative_panorama), line,
                                  f"{problem} (listed in {listed_in})"))
        return None
    problem = aerial_shape_problem(sizes["aerial"])
    if problem:
        errors.append(ErrorRecord(STAGE, pair_id, str(root / relative_aerial), line,
                                  f"{problem} (listed in {listed_in})"))
        return None
    annotation_path = None
    if annotation:
        candidate = root / annotation
        if not _inside(candidate, root) or not candidate.is_file():
            errors.append(ErrorRecord(STAGE, pair_id, str(candidate), line,
                                      f"annotation file does not exist (listed in {listed_in}); not needed for "
                                      f"orientation, pair kept", "warning"))
        else:
            annotation_path = str(candidate)
    rows = None
    panorama_size = sizes["panorama"]
    if panorama_rows is not None:
        rows = crop_rows(panorama_size[0], panorama_rows)
        panorama_size = (rows[1] - rows[0], panorama_size[1])
    return CrossViewPair(pair_id, str(root / relative_panorama), str(root / relative_aerial), split, panorama_size,
                         sizes["aerial"], relative_panorama, relative_aerial, annotation_path, rows, azimuth_offset)


# ---------------------------------------------------------------------------------------------
# CVACT


def load_cvact(root: str | Path, name: str = "cvact", panorama_rows: tuple[float, float] = CVACT_PANORAMA_ROWS,
               panorama_aspect: float | None = CVACT_PANORAMA_ASPECT, aspect_tolerance: float = ASPECT_TOLERANCE,
               azimuth_offset: float = 0.0) -> CrossViewDataset:
    """Load CVACT pairs (ANU layout, or one ``pano_img.png``/``sat_img.png`` pair); every pair in split ``all``.

    The panorama is checked against the full sphere's aspect (2:1) and cropped
    to ``panorama_rows`` (fractions of its height; default the middle half).
    ``azimuth_offset`` says where CVACT's column 0 faces in the CVUSA
    convention; 0 assumes they agree, which the sample data cannot confirm.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: CVACT folder does not exist")
    errors: list[ErrorRecord] = []
    pairs: list[CrossViewPair] = []
    candidates: list[tuple[str, str, str]] = []
    if (root / "pano_img.png").exists() or (root / "sat_img.png").exists():
        candidates.append(("pano_img", "pano_img.png", "sat_img.png"))
    for panorama in sorted((root / "streetview").glob("*_grdView.jpg")) if (root / "streetview").is_dir() else []:
        pair_id = panorama.name[: -len("_grdView.jpg")]
        candidates.append((pair_id, f"streetview/{panorama.name}", f"satview_polish/{pair_id}_satView_polish.jpg"))
    if not candidates:
        raise DatasetError(f"{root}: no CVACT pairs (expected streetview/*_grdView.jpg with "
                           f"satview_polish/*_satView_polish.jpg, or pano_img.png with sat_img.png)")
    for pair_id, relative_panorama, relative_aerial in candidates:
        pair = _checked_pair(root, pair_id, relative_panorama, relative_aerial, "all", panorama_aspect,
                             aspect_tolerance, str(root), None, errors, panorama_rows=panorama_rows,
                             azimuth_offset=azimuth_offset)
        if pair is not None:
            pairs.append(pair)
    return CrossViewDataset(name, str(root), pairs, errors)


# ---------------------------------------------------------------------------------------------
# pixels


@dataclass(frozen=True)
class PairPixels:
    panorama: torch.Tensor   # (3, H, W) in [0, 1], cropped
    aerial: torch.Tensor     # (3, S, S) in [0, 1]


def load_pair_pixels(pair: CrossViewPair, panorama_aspect: float | None = None,
                     aspect_tolerance: float = ASPECT_TOLERANCE) -> PairPixels:
    """Decode both images of a pair (panorama cropped to ``pair.panorama_rows``).

    Raises :class:`~eml_core.errors.ImageError` naming the file when it cannot
    be decoded, when the aerial image is not square, or (with
    ``panorama_aspect``) when the cropped panorama's aspect is off -- files can
    change between loading the dataset and a shard's run.
    """
    panorama = load_image(pair.panorama).pixels
    if pair.panorama_rows is not None:
        top, bottom = pair.panorama_rows
        if bottom > panorama.shape[1]:
            raise ImageError(pair.panorama, f"has {panorama.shape[1]} rows; the crop needs rows {top}-{bottom - 1}")
        panorama = panorama[:, top:bottom]
    problem = panorama_shape_problem((int(panorama.shape[-2]), int(panorama.shape[-1])), panorama_aspect,
                                     aspect_tolerance)
    if problem:
        raise ImageError(pair.panorama, problem)
    aerial = load_image(pair.aerial).pixels
    problem = aerial_shape_problem((int(aerial.shape[-2]), int(aerial.shape[-1])))
    if problem:
        raise ImageError(pair.aerial, problem)
    return PairPixels(panorama, aerial)


# ---------------------------------------------------------------------------------------------
# the embedded generated pairs


def polar_panorama(aerial: np.ndarray, panorama_size: tuple[int, int]) -> np.ndarray:
    """The inverse polar transform of a square aerial image ``(S, S, C)`` into a panorama ``(H, W, C)``.

    Panorama pixel (u, v) samples the aerial image (bilinearly) at azimuth
    ``phi_s(u)`` and radius ``r = (S / 2) (1 - (v + 0.5) / H)`` from the centre:
    ``x = cx - r sin phi``, ``y = cy + r cos phi``. Same dtype as the input.
    """
    import cv2

    height, width = panorama_size
    size = aerial.shape[0]
    if aerial.shape[1] != size:
        raise ArgumentError("aerial", f"must be square, got {aerial.shape[1]}x{aerial.shape[0]}")
    azimuth = panorama_azimuth(np.arange(width), width)
    radius = (size / 2.0) * (1.0 - (np.arange(height) + 0.5) / height)
    x, y = aerial_point(azimuth[None, :], radius[:, None], (size, size))
    return cv2.remap(aerial, x.astype(np.float32), y.astype(np.float32), interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


GENERATOR_VERSION = 1
DEFAULT_LOCATION = os.environ.get("EML_CROSSVIEW_DIR", "data/generated/crossview")

# Landmarks: distinct photographs bundled with scikit-image (grey ones are tinted).
LANDMARK_SOURCES = ("astronaut.png", "chelsea.png", "coffee.png", "color.png", "hubble_deep_field.jpg", "ihc.png",
                    "motorcycle_left.png", "retina.jpg", "rocket.jpg", "phantom.png", "chessboard_RGB.png",
                    "coins.png", "camera.png", "logo.png")
GROUND_TEXTURES = ("grass.png", "gravel.png", "brick.png", "moon.png", "cell.png")


@dataclass(frozen=True)
class CrossViewSyntheticConfig:
    train_pairs: int = 40
    val_pairs: int = 24
    aerial_size: int = 384
    panorama_size: tuple[int, int] = (176, 968)     # aspect 5.5, like CVUSA's 224x1232
    landmarks: tuple[int, int] = (3, 5)             # per image, inclusive
    landmark_diameter: tuple[float, float] = (0.16, 0.24)   # fraction of the aerial size
    landmark_radius: tuple[float, float] = (0.35, 1.0)      # distance from the centre, fraction of S/2 - d/2
    min_separation: float = 45.0                    # degrees between two landmarks of one image
    roads: tuple[int, int] = (0, 2)
    seed: int = 0
    version: int = GENERATOR_VERSION

    def __post_init__(self):
        if self.train_pairs < 0 or self.val_pairs < 0 or self.train_pairs + self.val_pairs < 1:
            raise ArgumentError("pairs", "need at least one pair")
        if self.aerial_size < 16 or min(self.panorama_size) < 8:
            raise ArgumentError("size", f"images too small: aerial {self.aerial_size}, panorama {self.panorama_size}")
        if not 1 <= self.landmarks[0] <= self.landmarks[1] <= len(LANDMARK_SOURCES):
            raise ArgumentError("landmarks", f"must be 1 <= min <= max <= {len(LANDMARK_SOURCES)}")
        if self.landmarks[1] * self.min_separation > 360:
            raise ArgumentError("min_separation", f"{self.landmarks[1]} landmarks cannot be "
                                                  f"{self.min_separation} degrees apart")


def _photo_rgb(file_name: str, rng: np.random.Generator) -> np.ndarray:
    """A bundled photograph as float RGB; transparency composited on white, grey photographs tinted."""
    image: Image.Image = Image.open(packaged_image(file_name))
    if image.mode in ("RGBA", "LA", "P"):
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image.convert("RGBA"))
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if np.allclose(rgb[..., 0], rgb[..., 1]) and np.allclose(rgb[..., 1], rgb[..., 2]):
        rgb = rgb * rng.uniform(0.4, 1.0, size=3).astype(np.float32)
    return rgb


@dataclass(frozen=True)
class Landmark:
    source: str
    azimuth: float     # degrees, the aerial convention
    radius: float      # pixels from the centre
    diameter: float    # pixels


def _ground(rng: np.random.Generator, size: int) -> np.ndarray:
    texture = Image.open(packaged_image(GROUND_TEXTURES[rng.integers(len(GROUND_TEXTURES))])).convert("L")
    scale = size / min(texture.size) * rng.uniform(1.0, 1.5)
    texture = texture.resize((int(np.ceil(texture.size[0] * scale)), int(np.ceil(texture.size[1] * scale))),
                             Image.Resampling.BILINEAR)
    grey = np.asarray(texture, dtype=np.float32) / 255.0
    top = rng.integers(0, grey.shape[0] - size + 1)
    left = rng.integers(0, grey.shape[1] - size + 1)
    grey = grey[top:top + size, left:left + size]
    tint = rng.uniform(0.3, 0.9, size=3).astype(np.float32)
    return np.clip(0.1 + 0.6 * grey[..., None] * tint, 0, 1)


def _draw_roads(rng: np.random.Generator, canvas: np.ndarray, count: int) -> None:
    import cv2

    size = canvas.shape[0]
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.3, 0.3) * size
        direction = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        centre = np.array([size / 2, size / 2]) + offset * normal
        a, b = centre - 2 * size * direction, centre + 2 * size * direction
        width = max(2, int(size * rng.uniform(0.03, 0.05)))
        grey = float(rng.uniform(0.25, 0.45))
        cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), (grey, grey, grey), width, cv2.LINE_AA)


def _place_landmarks(rng: np.random.Generator, config: CrossViewSyntheticConfig, count: int
                     ) -> list[tuple[float, float, float]]:
    """``(azimuth, radius, diameter)`` of up to ``count`` discs inside the inscribed circle, at least
    ``min_separation`` degrees apart and not overlapping (rejection sampling; fewer if space runs out)."""
    size = config.aerial_size
    placed: list[tuple[float, float, float]] = []
    for _ in range(200 * count):
        if len(placed) == count:
            break
        azimuth = float(rng.uniform(0, 360))
        diameter = float(rng.uniform(*config.landmark_diameter) * size)
        radius = float(rng.uniform(*config.landmark_radius) * (size / 2 - diameter / 2))
        x, y = aerial_point(azimuth, radius, (size, size))
        if all(abs((azimuth - a + 180) % 360 - 180) >= config.min_separation
               and np.hypot(*(np.subtract((x, y), aerial_point(a, r, (size, size))))) >= (diameter + d) / 2
               for a, r, d in placed):
            placed.append((azimuth, radius, diameter))
    return placed


def compose_aerial(rng: np.random.Generator, config: CrossViewSyntheticConfig) -> tuple[np.ndarray, list[Landmark]]:
    """One aerial image ``(S, S, 3)`` uint8 and its landmarks: discs cut from distinct photographs, at least
    ``min_separation`` degrees apart, not overlapping, inside the inscribed circle, on a tinted texture with roads."""
    size = config.aerial_size
    canvas = _ground(rng, size)
    _draw_roads(rng, canvas, int(rng.integers(config.roads[0], config.roads[1] + 1)))
    count = int(rng.integers(config.landmarks[0], config.landmarks[1] + 1))
    sources = rng.choice(len(LANDMARK_SOURCES), size=count, replace=False)
    landmarks = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # strict=False: fewer landmarks than sources when the rejection sampling runs out of room
    for source, (azimuth, radius, diameter) in zip(sources, _place_landmarks(rng, config, count), strict=False):
        photo = _photo_rgb(LANDMARK_SOURCES[source], rng)
        crop = int(min(photo.shape[:2]) * rng.uniform(0.6, 1.0))
        top = rng.integers(0, photo.shape[0] - crop + 1)
        left = rng.integers(0, photo.shape[1] - crop + 1)
        span = int(np.ceil(diameter)) + 2
        cut = Image.fromarray((photo[top:top + crop, left:left + crop] * 255).astype(np.uint8))
        patch = np.asarray(cut.resize((span, span), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        x, y = aerial_point(azimuth, radius, (size, size))
        # the disc samples the patch around the exact (sub-pixel) centre
        inside = (xx - float(x)) ** 2 + (yy - float(y)) ** 2 <= (diameter / 2) ** 2
        ui = np.clip(np.round(xx[inside] - float(x) + (span - 1) / 2).astype(int), 0, span - 1)
        vi = np.clip(np.round(yy[inside] - float(y) + (span - 1) / 2).astype(int), 0, span - 1)
        canvas[inside] = patch[vi, ui]
        landmarks.append(Landmark(LANDMARK_SOURCES[source], azimuth, radius, diameter))
    return (canvas * 255).round().astype(np.uint8), landmarks


def generate_crossview_dataset(folder: str | Path, config: CrossViewSyntheticConfig = CrossViewSyntheticConfig()
                               ) -> Path:
    """Write the embedded pairs (CVUSA layout, PNG) into ``folder``/CVUSA; returns that path. Deterministic.

    Besides the images and ``splits/train-19zl.csv`` / ``splits/val-19zl.csv``,
    ``landmarks.json`` records every landmark's source, azimuth, radius and
    diameter, and ``generator.json`` the config.
    """
    root = Path(folder) / "CVUSA"
    staging = Path(folder) / ".CVUSA.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "bingmap" / "19").mkdir(parents=True)
    (staging / "streetview" / "panos").mkdir(parents=True)
    (staging / "splits").mkdir()
    rng = np.random.default_rng(config.seed)
    lines: dict[str, list[str]] = {"train": [], "val": []}
    landmarks = {}
    for index in range(config.train_pairs + config.val_pairs):
        pair_id = f"{index + 1:07d}"
        aerial, marks = compose_aerial(rng, config)
        panorama = polar_panorama(aerial, config.panorama_size)
        Image.fromarray(aerial).save(staging / "bingmap" / "19" / f"{pair_id}.png")
        Image.fromarray(panorama).save(staging / "streetview" / "panos" / f"{pair_id}.png")
        split = "train" if index < config.train_pairs else "val"
        lines[split].append(f"bingmap/19/{pair_id}.png,streetview/panos/{pair_id}.png")
        landmarks[pair_id] = [asdict(m) for m in marks]
    for split, rows in lines.items():
        (staging / "splits" / f"{split}-19zl.csv").write_text("".join(f"{row}\n" for row in rows))
    (staging / "landmarks.json").write_text(json.dumps(landmarks, indent=1))
    (staging / "generator.json").write_text(json.dumps(asdict(config), indent=2))
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)  # atomic: a half-written dataset never looks complete
    return root


def ensure_crossview_dataset(folder: str | Path, config: CrossViewSyntheticConfig = CrossViewSyntheticConfig()
                             ) -> Path:
    """Generate the pairs unless ``folder`` already holds them, made with the same config."""
    root = Path(folder) / "CVUSA"
    stamp = root / "generator.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(asdict(config))):
        return root
    return generate_crossview_dataset(folder, config)


def check_crossview_spec(spec: str) -> None:
    """Fail fast on a malformed spec or a missing folder (``cvusa:PATH``, ``cvact:PATH``, ``synthetic[:PATH]``)."""
    kind, _, argument = spec.partition(":")
    if kind == "synthetic":
        return
    if kind not in ("cvusa", "cvact") or not argument:
        raise DatasetError(f"cross-view dataset spec {spec!r}: expected cvusa:PATH, cvact:PATH or synthetic[:PATH]")
    if not Path(argument).is_dir():
        raise DatasetError(f"cross-view dataset spec {spec!r}: folder {argument} does not exist")


def crossview_dataset_from_spec(spec: str, splits=None,
                                synthetic_config: CrossViewSyntheticConfig = CrossViewSyntheticConfig()
                                ) -> CrossViewDataset:
    """``cvusa:PATH``, ``cvact:PATH`` or ``synthetic[:PATH]`` (the embedded pairs, generated with
    ``synthetic_config`` unless already there)."""
    check_crossview_spec(spec)
    kind, _, argument = spec.partition(":")
    if kind == "cvusa":
        return load_cvusa(argument, splits)
    if kind == "cvact":
        return load_cvact(argument)
    root = ensure_crossview_dataset(argument or DEFAULT_LOCATION, synthetic_config)
    return load_cvusa(root, splits, name="synthetic_crossview")
