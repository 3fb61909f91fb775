"""Labelled image datasets with ground-truth boxes, and the `errors` records of what could not be used.

Loaders never stop at the first bad line: every problem becomes an
:class:`ErrorRecord` naming the file and line, the item is left out (or, for a
box sticking a little out of its image, clipped and kept with a warning), and
the rest loads.

Layouts:

* **CUB-200-2011** (:func:`load_cub`): ``images.txt`` (id path),
  ``bounding_boxes.txt`` (id x y w h, pixels), ``image_class_labels.txt`` (id label),
  ``train_test_split.txt`` (id is_train), ``classes.txt`` (id name), ``images/``.
  ``root`` is the ``CUB_200_2011`` folder or the folder holding it.
* **image folder + CSV** (:func:`load_folder`): a CSV with header
  ``image,label,split,x,y,width,height`` (``image`` relative to the root; box in
  pixels, may be empty; ``split`` is ``train`` or ``test``).

Boxes are stored as pixel edges ``(x0, y0, x1, y1)`` in original image coordinates.

**Split rules** (:data:`SPLIT_RULES`), chosen when a dataset is loaded and recorded in
:attr:`Dataset.split_rule`:

* ``classes``: the deep-metric-learning protocol (zero-shot retrieval). The class ids present are
  sorted; the first half (``n // 2`` of ``n`` classes) is ``train``, the rest ``test``, so no class
  is on both sides. Full CUB-200-2011: classes 1-100 train, 101-200 evaluate (the paper's split); the
  50-class CUB sample: 1-25 / 26-50. The default of the CUB layout (and so of the embedded
  ``synthetic`` data, written in that layout: 12 classes give 1-6 / 7-12). For ``folder:`` datasets
  the same rule over the CSV's labels; the CSV's ``split`` column is then not read (it may be absent).
* ``official``: the dataset's own per-image split: CUB's ``train_test_split.txt`` (images of every
  class on both sides), the CSV's ``split`` column (the default of ``folder:``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from eml_core.errors import ArgumentError, EmlError, ImageError
from eml_core.images import check_pixel_count

ERROR_COLUMNS = ("stage", "item", "file", "line", "problem", "severity")
SPLIT_RULES = ("classes", "official")


class DatasetError(EmlError):
    """The dataset cannot be read at all (e.g. its index file is missing)."""


@dataclass(frozen=True)
class Item:
    image_id: str
    path: str
    relative_path: str
    label: int
    split: str
    box: tuple[float, float, float, float] | None
    size: tuple[int, int]  # (height, width) of the original image


@dataclass(frozen=True)
class ErrorRecord:
    """One row of the `errors` table."""

    stage: str
    item: str | None
    file: str | None
    line: int | None
    problem: str
    severity: str = "error"  # "error": item left out; "warning": item kept (e.g. box clipped)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Dataset:
    name: str
    root: str
    items: list[Item]
    errors: list[ErrorRecord] = field(default_factory=list)
    class_names: dict[int, str] = field(default_factory=dict)
    split_rule: str = "official"  # how items were put into train and test (SPLIT_RULES)

    def split(self, split: str) -> list[Item]:
        return [item for item in self.items if item.split == split]

    @property
    def labels(self) -> list[int]:
        return sorted({item.label for item in self.items})

    def fingerprint(self) -> str:
        """SHA-256 over every item's path, size on disk, label, split and box: changes when the data does."""
        digest = hashlib.sha256()
        for item in sorted(self.items, key=lambda i: i.image_id):
            try:
                bytes_on_disk = Path(item.path).stat().st_size
            except OSError:
                bytes_on_disk = -1
            record = [item.image_id, item.relative_path, bytes_on_disk, item.label, item.split, item.box]
            digest.update(json.dumps(record).encode())
        return digest.hexdigest()


def check_split_rule(rule: str, argument: str = "split_rule") -> str:
    """``rule`` if it is one of :data:`SPLIT_RULES`; an :class:`ArgumentError` naming ``argument`` otherwise."""
    if rule not in SPLIT_RULES:
        raise ArgumentError(argument, f"expected one of {', '.join(SPLIT_RULES)}, got {rule!r}")
    return rule


def split_by_classes(items: list[Item]) -> list[Item]:
    """The ``classes`` rule: items of the first half of the sorted class ids present (``n // 2`` of ``n``) become
    ``train``, the others ``test``; no class is on both sides. Order and every other field are kept."""
    labels = sorted({item.label for item in items})
    training = set(labels[: len(labels) // 2])
    return [replace(item, split="train" if item.label in training else "test") for item in items]


def _text_lines(path: Path, stage: str, errors: list[ErrorRecord]):
    """``(line number, text)`` of a text file's non-blank lines; a line that is not UTF-8 is an error row, not
    a silently mangled id."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                errors.append(ErrorRecord(stage, None, str(path), number,
                                          f"line is not valid UTF-8 ({error.reason} at byte {error.start}): "
                                          f"{raw[:60]!r}; line ignored"))
                continue
            if line.strip():
                yield number, line


def _read_table(path: Path, columns: int, stage: str, errors: list[ErrorRecord], parse) -> "_Rows":
    """Read a whitespace-separated annotation file into {id: parsed values} (with each id's line in
    ``.lines``); bad, duplicate and non-UTF-8 lines become error rows."""
    rows = _Rows()
    if not path.is_file():
        errors.append(ErrorRecord(stage, None, str(path), None, "annotation file is missing"))
        return rows
    for number, line in _text_lines(path, stage, errors):
        fields = line.split(maxsplit=columns - 1) if columns == 2 else line.split()
        if len(fields) != columns:
            errors.append(ErrorRecord(stage, fields[0] if fields else None, str(path), number,
                                      f"expected {columns} fields, found {len(fields)}: {line.strip()[:80]!r}"))
            continue
        try:
            values = parse(fields[1:])
        except ValueError:
            errors.append(ErrorRecord(stage, fields[0], str(path), number, f"cannot parse {line.strip()[:80]!r}"))
            continue
        if fields[0] in rows:
            errors.append(ErrorRecord(stage, fields[0], str(path), number,
                                      f"duplicate id (first kept, line {rows.lines[fields[0]]})", "warning"))
            continue
        rows[fields[0]] = values
        rows.lines[fields[0]] = number
    return rows


class _Rows(dict):
    """``{id: values}`` that also remembers each id's line (``.lines``) for error rows."""

    def __init__(self):
        super().__init__()
        self.lines: dict[str, int] = {}


def _report_orphans(table: "_Rows", known: dict, path: Path, stage: str, errors: list[ErrorRecord]) -> None:
    """Annotation lines for ids that the index does not list: ignored, but never silently."""
    for image_id in table:
        if image_id not in known:
            errors.append(ErrorRecord(stage, image_id, str(path), table.lines.get(image_id),
                                      "annotation for an id that images.txt does not list: ignored", "warning"))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels; refuses decompression bombs."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
    check_pixel_count(path, width, height)
    return height, width


def check_box(box_xywh, size: tuple[int, int], stage: str, image_id: str, file: str, line: int | None,
              errors: list[ErrorRecord]):
    """Validate an (x, y, w, h) box against the image; return (x0, y0, x1, y1) or None (left out).

    Boxes sticking out of the image are clipped and kept with a warning (3 boxes
    of the full CUB do so by a few pixels); empty or fully outside boxes leave
    the item out.
    """
    x, y, w, h = box_xywh
    height, width = size
    if not all(math.isfinite(v) for v in box_xywh) or w <= 0 or h <= 0:
        errors.append(ErrorRecord(stage, image_id, file, line, f"box {box_xywh} has no area"))
        return None
    x0, y0, x1, y1 = x, y, x + w, y + h
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if cx1 <= cx0 or cy1 <= cy0:
        errors.append(ErrorRecord(stage, image_id, file, line,
                                  f"box {box_xywh} lies outside the {width}x{height} image"))
        return None
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        errors.append(ErrorRecord(stage, image_id, file, line,
                                  f"box {box_xywh} sticks out of the {width}x{height} image; clipped to "
                                  f"({cx0:g}, {cy0:g}, {cx1:g}, {cy1:g})", "warning"))
    return (cx0, cy0, cx1, cy1)


def _checked_image(path: Path, stage: str, image_id: str, errors: list[ErrorRecord],
                   listed_in: str | None = None, line: int | None = None):
    """Image size from the header, or None with an error naming the image (and where it is listed)."""
    where = f" (listed in {listed_in}, line {line})" if listed_in and line else ""
    if not path.is_file():
        errors.append(ErrorRecord(stage, image_id, str(path), line, f"image file does not exist{where}"))
        return None
    try:
        return image_size(path)
    except ImageError as error:
        errors.append(ErrorRecord(stage, image_id, str(path), line, f"{error.problem}{where}"))
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
        errors.append(ErrorRecord(stage, image_id, str(path), line, f"not a readable image ({error}){where}"))
        return None


def cub_root(root: str | Path) -> Path:
    root = Path(root)
    if (root / "CUB_200_2011" / "images.txt").is_file():
        return root / "CUB_200_2011"
    return root


def load_cub(root: str | Path, name: str = "cub200", split_rule: str = "classes") -> Dataset:
    """Load a CUB-200-2011 folder (official layout, original ids).

    ``split_rule`` ``classes`` (default): first half of the class ids present for training, second half for
    evaluation (``train_test_split.txt`` is not read); ``official``: ``train_test_split.txt``.
    """
    check_split_rule(split_rule)
    official = split_rule == "official"
    root = cub_root(root)
    index = root / "images.txt"
    if not index.is_file():
        raise DatasetError(f"{index}: CUB index file is missing (expected the official CUB_200_2011 layout)")
    stage = "load_dataset"
    errors: list[ErrorRecord] = []
    paths = _read_table(index, 2, stage, errors, lambda f: (f[0].strip(),))
    boxes = _read_table(root / "bounding_boxes.txt", 5, stage, errors, lambda f: tuple(float(v) for v in f))
    labels = _read_table(root / "image_class_labels.txt", 2, stage, errors, lambda f: (int(f[0]),))
    # the per-image split file only matters to the official rule; the class rule never reads it
    splits = _read_table(root / "train_test_split.txt", 2, stage, errors, lambda f: (int(f[0]),)) if official \
        else _Rows()
    names = _read_table(root / "classes.txt", 2, stage, [], lambda f: (f[0].strip(),))
    annotation_files = [(boxes, "bounding_boxes.txt"), (labels, "image_class_labels.txt")]
    if official:
        annotation_files.append((splits, "train_test_split.txt"))
    for table, file_name in annotation_files:
        _report_orphans(table, paths, root / file_name, stage, errors)
    # ids whose annotation line was already reported as unparseable: report each problem once
    already_reported = {e.item for e in errors}

    items = []
    seen_paths: dict[str, str] = {}
    for image_id, (relative,) in paths.items():
        if relative in seen_paths:
            errors.append(ErrorRecord(stage, image_id, str(index), paths.lines.get(image_id),
                                      f"image {relative} is listed again (first as id {seen_paths[relative]}); "
                                      f"left out so that it is never paired with itself"))
            continue
        seen_paths[relative] = image_id
        required = (("class label", labels), ("train/test split", splits)) if official else (("class label", labels),)
        missing = [what for what, table in required if image_id not in table]
        if missing:
            errors.append(ErrorRecord(stage, image_id, str(index), paths.lines.get(image_id),
                                      f"image {relative}: no {' and no '.join(missing)} annotation"))
            continue
        split_flag = splits[image_id][0] if official else 1
        if split_flag not in (0, 1):
            errors.append(ErrorRecord(stage, image_id, str(root / "train_test_split.txt"), splits.lines.get(image_id),
                                      f"is_train must be 0 or 1, got {split_flag}"))
            continue
        path = root / "images" / relative
        size = _listed_image(root / "images", relative, stage, image_id, errors, str(index),
                             paths.lines.get(image_id), where="images folder")
        if size is None:
            continue
        box = None
        if image_id in boxes:
            box = check_box(boxes[image_id], size, stage, image_id, str(root / "bounding_boxes.txt"),
                            boxes.lines.get(image_id), errors)
            if box is None:
                continue
        elif (root / "bounding_boxes.txt").is_file():
            if image_id in already_reported:
                continue
            errors.append(ErrorRecord(stage, image_id, str(root / "bounding_boxes.txt"), None,
                                      f"image {relative}: no bounding box line"))
            continue
        items.append(Item(image_id, str(path), relative, labels[image_id][0], "train" if split_flag else "test",
                          box, size))
    class_names = {int(k): v[0] for k, v in names.items() if k.isdigit()}
    if not official:
        items = split_by_classes(items)
    return Dataset(name, str(root), items, errors, class_names, split_rule)


def _listed_image(folder: Path, relative: str, stage: str, image_id: str, errors: list[ErrorRecord],
                  listed_in: str, line: int | None, what: str = "image", where: str = "dataset folder",
                  consequence: str = "left out"):
    """Size of the image an annotation file lists at ``relative`` under ``folder``, or None with an error row: the
    path leaves ``folder`` (``"{what} path ... leaves the {where}; {consequence}"``), or the image is missing or
    unreadable (:func:`_checked_image`)."""
    path = folder / relative
    if not _inside(path, folder):
        errors.append(ErrorRecord(stage, image_id, listed_in, line,
                                  f"{what} path {relative!r} leaves the {where}; {consequence}"))
        return None
    return _checked_image(path, stage, image_id, errors, listed_in, line)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` stays within ``folder`` once ``..`` and absolute parts are taken literally.

    An annotation file must not pull in images from elsewhere on the disk
    (study stimuli made from them may be published). The check is lexical:
    symbolic links the user put inside the dataset are their own arrangement.
    """
    return os.path.normpath(path).startswith(os.path.normpath(folder) + os.sep)


FOLDER_COLUMNS = ("image", "label", "split", "x", "y", "width", "height")
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what the csv module (and an editor) counts as the end of a line


def read_csv_records(csv_path: Path, required: tuple[str, ...], stage: str, errors: list[ErrorRecord],
                     hint: str = ""):
    """``(header, records)`` of a UTF-8 CSV file; ``records`` yields ``(line, fields)`` for each non-blank record.

    ``line`` is the *physical* line where the record starts (blank lines and quoted multi-line fields
    counted), so it matches an editor. An unreadable record becomes an error row and the rest go on; a file
    that is not UTF-8, empty, or lacks a required column is a DatasetError naming it.
    """
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = csv_path.read_bytes()[:error.start].count(b"\n") + 1
        raise DatasetError(f"{csv_path}: line {line} is not valid UTF-8 ({error.reason}); "
                           f"save the CSV as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError(f"{csv_path}: empty file (expected a header with {', '.join(required)})") from None
    except csv.Error as error:
        raise DatasetError(f"{csv_path}: unreadable header ({error})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{csv_path}: header lacks column(s) {', '.join(missing)}{hint}")

    def records():
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                errors.append(ErrorRecord(stage, None, str(csv_path), reader.line_num,
                                          f"unreadable CSV record ({error})"))
                continue
            # the record's first physical line: the lines it spans end at reader.line_num
            first = reader.line_num - sum(len(LINE_BREAK.findall(field)) for field in fields)
            if fields and any(field.strip() for field in fields):
                yield first, fields

    return header, records()


def load_folder(root: str | Path, csv_path: str | Path | None = None, name: str = "folder",
                split_rule: str = "official") -> Dataset:
    """Load an image folder described by a CSV (columns :data:`FOLDER_COLUMNS`).

    ``split_rule`` ``official`` (default) takes each row's ``split``; ``classes`` splits by class (first half
    of the labels present for training) and does not read the ``split`` column, which may then be absent.

    Errors name the CSV's *physical* line where the record starts (blank lines
    and quoted multi-line fields counted), so the line number matches an editor.
    A row with fewer or more fields than the header, an image listed twice
    (the first is kept) and a non-UTF-8 file are reported, never guessed at.
    """
    check_split_rule(split_rule)
    official = split_rule == "official"
    root = Path(root)
    csv_path = Path(csv_path) if csv_path else root / "annotations.csv"
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: annotation CSV is missing (columns: {', '.join(FOLDER_COLUMNS)})")
    stage = "load_dataset"
    errors: list[ErrorRecord] = []
    items = []
    required = ("image", "label", "split") if official else ("image", "label")
    header, records = read_csv_records(csv_path, required, stage, errors)
    seen_images: dict[str, int] = {}
    for number, fields in records:
        image_id = str(number)
        if len(fields) != len(header):
            errors.append(ErrorRecord(stage, image_id, str(csv_path), number,
                                      f"row has {len(fields)} fields, the header has {len(header)}: "
                                      f"{','.join(fields)[:80]!r}"))
            continue
        row = dict(zip(header, fields, strict=True))
        try:
            label = int(row["label"])
            split = row["split"].strip() if official else "test"  # the class rule assigns it below
            if split not in ("train", "test"):
                raise ValueError(f"split must be train or test, got {split!r}")
            box_fields = [row.get(c, "") or "" for c in ("x", "y", "width", "height")]
            filled = [v.strip() != "" for v in box_fields]
            if any(filled) and not all(filled):
                raise ValueError("box needs all of x, y, width, height (or none of them)")
            box_xywh = tuple(float(v) for v in box_fields) if all(filled) else None
        except (ValueError, TypeError, AttributeError) as error:
            errors.append(ErrorRecord(stage, image_id, str(csv_path), number, f"malformed row: {error}"))
            continue
        relative = (row["image"] or "").strip()
        if not relative:
            errors.append(ErrorRecord(stage, image_id, str(csv_path), number, "malformed row: empty image path"))
            continue
        if relative in seen_images:
            errors.append(ErrorRecord(stage, image_id, str(csv_path), number,
                                      f"image {relative} is listed again (first on line {seen_images[relative]}); "
                                      f"left out so that it is never paired with itself"))
            continue
        seen_images[relative] = number
        path = root / relative
        size = _listed_image(root, relative, stage, image_id, errors, str(csv_path), number)
        if size is None:
            continue
        box = None
        if box_xywh is not None:
            box = check_box(box_xywh, size, stage, image_id, str(csv_path), number, errors)
            if box is None:
                continue
        items.append(Item(image_id, str(path), relative, label, split, box, size))
    if not official:
        items = split_by_classes(items)
    return Dataset(name, str(root), items, errors, split_rule=split_rule)
