"""Identity datasets for retrieval: Market-1501 person re-identification and face identity folders.

Both load into the same :class:`~eml_core.datasets.Dataset` of
:class:`IdentityItem` (an :class:`~eml_core.datasets.Item` that also knows its
camera and subset), so a gallery index, a training run or a retrieval query
treats them like any other dataset. As everywhere in eml, a bad file name or
file is an :class:`~eml_core.datasets.ErrorRecord` naming it, never a stop.

**Market-1501** (Zheng et al., ICCV 2015; :func:`load_market1501`). The
official folders ``bounding_box_train/`` (training identities),
``query/`` (one query per identity and camera) and ``bounding_box_test/`` (the
gallery), files named ``<pid>_c<cam>s<seq>_<frame>_<box>.jpg``: person id (4
digits, or ``-1``), camera 1-6, video sequence, frame, detection box index.
``root`` is the ``Market-1501-v15.09.15`` folder or the folder holding it. The
subsets become splits ``train``, ``query`` and ``gallery``. Two special ids
stay in the gallery, as in the benchmark: ``-1`` (**junk**: poor detections,
label -1) and ``0000`` (**distractors**: background boxes, label 0). The
benchmark's evaluation (:func:`eml_core.retrieval_benchmark.reid_evaluation`)
ignores junk images and, per query, the gallery images of the same person
seen by the same camera; distractors count as wrong matches.

**Faces** (:func:`load_faces`): ``identities.csv`` with header ``file,identity``
(``file`` relative to ``images/``), one row per photo; photos of the folder
that the CSV does not list are not part of the dataset. Identities are
numbered from 1 in sorted order of their names (``class_names`` maps back), and split
by the metric-learning rule ``classes``: the first half of the identities is
``train``, the rest ``test``.

The generic ``folder:ROOT[,CSV]`` layout is :func:`eml_core.datasets.load_folder`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from eml_core.datasets import (
    Dataset,
    DatasetError,
    ErrorRecord,
    Item,
    _checked_image,
    _listed_image,
    read_csv_records,
)

MARKET_FOLDERS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
MARKET_NAME = re.compile(r"^(?P<pid>-1|\d{4})_c(?P<camera>\d)s(?P<sequence>\d)_(?P<frame>\d{6})_(?P<box>\d{2})"
                         r"\.(?:jpg|jpeg|png)$", re.IGNORECASE)
JUNK_ID = -1
DISTRACTOR_ID = 0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FACES_COLUMNS = ("file", "identity")


@dataclass(frozen=True)
class IdentityItem(Item):
    """An :class:`~eml_core.datasets.Item` with where it was seen: camera and frame (Market-1501), subset."""

    camera: int | None = None
    subset: str | None = None      # the dataset's own folder name: query, bounding_box_test, images, ...
    frame: int | None = None

    @property
    def is_junk(self) -> bool:
        return self.label == JUNK_ID

    @property
    def is_distractor(self) -> bool:
        return self.label == DISTRACTOR_ID


def market1501_root(root: str | Path) -> Path:
    """The folder holding ``query/`` and ``bounding_box_test/``: ``root`` or its ``Market-1501*`` child."""
    root = Path(root)
    if (root / "query").is_dir() or (root / "bounding_box_test").is_dir():
        return root
    children = sorted(p for p in root.glob("Market-1501*") if p.is_dir()) if root.is_dir() else []
    return children[0] if len(children) == 1 else root


def parse_market_name(name: str) -> dict | None:
    """``{"pid", "camera", "sequence", "frame", "box"}`` of a Market-1501 file name, or None."""
    match = MARKET_NAME.match(name)
    if match is None:
        return None
    return {key: int(value) for key, value in match.groupdict().items()}


def load_market1501(root: str | Path, name: str = "market1501", subsets=tuple(MARKET_FOLDERS)) -> Dataset:
    """Load the official Market-1501 folders named in ``subsets`` (default: all three).

    Items are sorted by file name within each folder (the benchmark's order);
    ``image_id`` is ``<folder>/<file stem>``, unique across folders. A file whose
    name does not follow the pattern, a camera outside 1-6, a query of the junk or
    distractor id (it has no true match), or an unreadable image is an error row;
    a missing subset folder is an error row, and no folder at all is a
    :class:`~eml_core.datasets.DatasetError`.
    """
    root = market1501_root(root)
    unknown = [s for s in subsets if s not in MARKET_FOLDERS]
    if unknown:
        raise DatasetError(f"market1501: unknown subset(s) {', '.join(unknown)}; "
                           f"choose from {', '.join(MARKET_FOLDERS)}")
    if not any((root / folder).is_dir() for folder in subsets):
        raise DatasetError(f"{root}: no Market-1501 folder ({', '.join(subsets)}) found; expected the official "
                           f"Market-1501-v15.09.15 layout")
    stage = "load_dataset"
    errors: list[ErrorRecord] = []
    items: list[Item] = []
    for folder in subsets:
        directory = root / folder
        if not directory.is_dir():
            errors.append(ErrorRecord(stage, None, str(directory), None, "Market-1501 folder is missing"))
            continue
        for path in sorted(directory.iterdir()):
            if path.name.startswith("."):
                continue
            image_id = f"{folder}/{path.stem}"
            parts = parse_market_name(path.name)
            if parts is None:
                what = "an image" if path.suffix.lower() in IMAGE_SUFFIXES else "a file"
                errors.append(ErrorRecord(stage, image_id, str(path), None,
                                          f"{what} whose name does not follow <pid>_c<cam>s<seq>_<frame>_<box>.jpg; "
                                          f"left out", "warning" if what == "a file" else "error"))
                continue
            if not 1 <= parts["camera"] <= 6:
                errors.append(ErrorRecord(stage, image_id, str(path), None,
                                          f"camera {parts['camera']} is not one of Market-1501's cameras 1-6; "
                                          f"left out"))
                continue
            if folder == "query" and parts["pid"] in (JUNK_ID, DISTRACTOR_ID):
                errors.append(ErrorRecord(stage, image_id, str(path), None,
                                          f"a query of the {'junk' if parts['pid'] == JUNK_ID else 'distractor'} id "
                                          f"{parts['pid']} has no true match; left out"))
                continue
            size = _checked_image(path, stage, image_id, errors)
            if size is None:
                continue
            items.append(IdentityItem(image_id, str(path), f"{folder}/{path.name}", parts["pid"],
                                      MARKET_FOLDERS[folder], None, size, camera=parts["camera"], subset=folder,
                                      frame=parts["frame"]))
    # the benchmark's own split is already identity-disjoint: training ids never appear in query or gallery
    return Dataset(name, str(root), items, errors, split_rule="official")


def load_faces(root: str | Path, csv_path: str | Path | None = None, name: str = "faces") -> Dataset:
    """Load a face identity folder: ``identities.csv`` (``file,identity``) and ``images/``.

    Rows naming a missing or unreadable photo, a path leaving ``images/``, an
    empty identity, or a photo listed twice (the first row is kept) are error rows
    naming the CSV line. Labels: identities in sorted order of name, from 1.
    """
    root = Path(root)
    csv_path = Path(csv_path) if csv_path else root / "identities.csv"
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: identity CSV is missing (columns: {', '.join(FACES_COLUMNS)})")
    images = root / "images"
    stage = "load_dataset"
    errors: list[ErrorRecord] = []
    rows: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    header, records = read_csv_records(csv_path, FACES_COLUMNS, stage, errors, hint=" (expected file,identity)")
    for number, fields in records:
        if len(fields) != len(header):
            errors.append(ErrorRecord(stage, str(number), str(csv_path), number,
                                      f"row has {len(fields)} fields, the header has {len(header)}"))
            continue
        row = dict(zip(header, (f.strip() for f in fields), strict=False))
        file, identity = row["file"], row["identity"]
        if not file or not identity:
            errors.append(ErrorRecord(stage, file or str(number), str(csv_path), number,
                                      "empty file name or identity; row left out"))
            continue
        if file in seen:
            errors.append(ErrorRecord(stage, file, str(csv_path), number,
                                      f"photo listed again (first on line {seen[file]}); left out"))
            continue
        seen[file] = number
        rows.append((number, file, identity))
    labels = {identity: label for label, identity in enumerate(sorted({r[2] for r in rows}), start=1)}
    train_identities = set(sorted(labels)[: len(labels) // 2])
    items: list[Item] = []
    for number, file, identity in rows:
        path = images / file
        size = _listed_image(images, file, stage, file, errors, str(csv_path), number, what="photo",
                             where="images folder")
        if size is None:
            continue
        items.append(IdentityItem(Path(file).as_posix(), str(path), f"images/{Path(file).as_posix()}", labels[identity],
                                  "train" if identity in train_identities else "test", None, size, subset="images"))
    return Dataset(name, str(root), items, errors, {label: identity for identity, label in labels.items()},
                   split_rule="classes")
