"""Query files of interactive retrieval: a CSV or Parquet table of query images, each with its region.

Columns (by header name, in any order):

==================  ==================================================================================
``image``           the query image; a relative path is relative to the folder of the query file
``x0, y0, x1, y1``  a box, pixel edges of the original image (``0, 0, W, H`` is the whole image)
``x, y``            or a point, pixel coordinates (pixel u spans [u, u + 1))
``query_id``        optional; ``q<row>`` when absent or empty (row 1 is the first data row)
``label``           optional integer: the label of the region's *content* (the class of the marked object,
                    the identity a bag belongs to). Runs use it for precision@k / mAP by label and human
                    studies for catch trials; leave it empty when unknown.
==================  ==================================================================================

A file is untrusted input. The file itself must be readable, UTF-8 (CSV) and name ``image`` and at least one
complete region (``x0..y1`` or ``x, y``), else :class:`QueryFileError` names it. A row that cannot become a
query (no image, both or neither region, a coordinate that is not a finite number, a label that is not an
integer, a repeated ``query_id``) is an ``errors`` row naming the file and line, and the other rows go on.
Whether a region lies inside its image is checked when the image is read
(:func:`eml_core.region_retrieval.query_vectors`).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Iterator
from pathlib import Path

from eml_core.datasets import ErrorRecord
from eml_core.errors import EmlError
from eml_core.region_retrieval import Region, RegionQuery

BOX_COLUMNS = ("x0", "y0", "x1", "y1")
POINT_COLUMNS = ("x", "y")
COLUMNS = ("query_id", "image", *BOX_COLUMNS, *POINT_COLUMNS, "label")
MAX_QUERIES = 1_000_000
MAX_ID_LENGTH = 200
STAGE = "queries"


class QueryFileError(EmlError):
    """A query file that cannot be read at all (missing, not a table, no image or region columns)."""


def _rows_of(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """``(columns, [(line, row), ...])`` with every value as text (None when empty or absent)."""
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as error:
            raise QueryFileError(f"{path}: not a readable Parquet table ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0][:200] if str(error) else ''})") from None
        if table.num_rows > MAX_QUERIES:
            raise QueryFileError(f"{path}: {table.num_rows} rows; at most {MAX_QUERIES} queries per file")
        records = table.to_pylist()
        return table.column_names, [(n, {k: None if v is None else str(v) for k, v in row.items()})
                                    for n, row in enumerate(records, start=1)]
    with _csv_problems(path), open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows: list[tuple[int, dict]] = []
        for row in reader:
            if len(rows) >= MAX_QUERIES:
                raise QueryFileError(f"{path}: more than {MAX_QUERIES} rows; at most {MAX_QUERIES} queries "
                                     f"per file")
            values = {(k or "").strip(): (v.strip() if isinstance(v, str) and v.strip() else None)
                      for k, v in row.items() if k is not None}
            rows.append((reader.line_num, values))
    return columns, rows


@contextlib.contextmanager
def _csv_problems(path: Path) -> Iterator[None]:
    """A CSV query file that cannot be read becomes one QueryFileError naming the file and the problem."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise QueryFileError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except csv.Error as error:
        raise QueryFileError(f"{path}: not a readable CSV table ({error})") from None
    except OSError as error:
        raise QueryFileError(f"{path}: cannot be read ({error.strerror or error})") from None


def check_query_columns(columns: list[str], where: str) -> None:
    """The header must name ``image`` and one complete region form."""
    if "image" not in columns:
        raise QueryFileError(f"{where}: no 'image' column (expected columns {', '.join(COLUMNS)})")
    if not (set(BOX_COLUMNS) <= set(columns) or set(POINT_COLUMNS) <= set(columns)):
        raise QueryFileError(f"{where}: no region columns: give a box (x0, y0, x1, y1) or a point (x, y)")


def query_file_columns(path: str | os.PathLike) -> list[str]:
    """The header of a query file, read without its rows (a check before a run starts); QueryFileError when the
    file is not a readable table."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (OSError, pa.ArrowException) as error:
            raise QueryFileError(f"{path}: not a readable Parquet table ({type(error).__name__})") from None
    with _csv_problems(path), open(path, newline="", encoding="utf-8") as handle:
        return [c.strip() for c in next(csv.reader(handle), [])]


def _number(text: str | None, column: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} = {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{column} = {text[:40]!r} is not a finite number")
    return value


def _region(row: dict) -> Region:
    box = [_number(row.get(c), c) for c in BOX_COLUMNS]
    point = [_number(row.get(c), c) for c in POINT_COLUMNS]
    has_box, has_point = any(v is not None for v in box), any(v is not None for v in point)
    if has_box and has_point:
        raise ValueError("gives both a box (x0..y1) and a point (x, y); give one")
    if has_box:
        if any(v is None for v in box):
            empty = [c for c, v in zip(BOX_COLUMNS, box, strict=True) if v is None]
            raise ValueError(f"box incomplete: {', '.join(empty)} empty")
        return Region.box(*box)  # type: ignore[arg-type]
    if has_point:
        if any(v is None for v in point):
            raise ValueError("point incomplete: give both x and y")
        return Region.point(*point)  # type: ignore[arg-type]
    raise ValueError("no region: give a box (x0, y0, x1, y1) or a point (x, y)")


def _label(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"label = {text[:40]!r} is not an integer") from None
    if not math.isfinite(value) or value != int(value) or abs(value) > 2**62:
        raise ValueError(f"label = {text[:40]!r} is not an integer")
    return int(value)


def read_queries(path: str | os.PathLike) -> tuple[list[RegionQuery], list[ErrorRecord]]:
    """The queries of a CSV or Parquet query file (``.parquet``: Parquet; anything else: CSV) and the rows that
    could not become queries, as ``errors`` rows. Image paths come back absolute."""
    path = Path(path)
    if not path.is_file():
        raise QueryFileError(f"{path}: query file does not exist" if not path.exists() else
                             f"{path}: is not a file")
    columns, rows = _rows_of(path)
    check_query_columns(columns, str(path))
    folder = path.resolve().parent
    queries: list[RegionQuery] = []
    errors: list[ErrorRecord] = []
    seen: set[str] = set()
    for number, (line, row) in enumerate(rows, start=1):
        query_id = row.get("query_id") or f"q{number:04d}"
        try:
            if len(query_id) > MAX_ID_LENGTH or any(ord(c) < 32 for c in query_id):
                raise ValueError(f"query_id must be at most {MAX_ID_LENGTH} printable characters")
            if query_id in seen:
                raise ValueError(f"query_id {query_id[:60]!r} is repeated (an earlier row has it)")
            image = row.get("image")
            if not image:
                raise ValueError("no image")
            region = _region(row)
            label = _label(row.get("label"))
        except ValueError as problem:
            errors.append(ErrorRecord(STAGE, query_id[:MAX_ID_LENGTH], str(path), line, f"{problem}; row left out"))
            continue
        seen.add(query_id)
        queries.append(RegionQuery(query_id, str(folder / image) if not os.path.isabs(image) else image, region,
                                   label))
    return queries, errors


def write_queries(path: str | os.PathLike, queries: list[RegionQuery]) -> Path:
    """Write a CSV query file (columns :data:`COLUMNS`); images under the file's folder are written relative to
    it, so the file and its images can move together."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.resolve().parent
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for query in queries:
            image = Path(query.image).resolve()
            shown = image.relative_to(folder).as_posix() if image.is_relative_to(folder) else str(image)
            r = query.region
            box = [r.x0, r.y0, r.x1, r.y1] if r.kind == "box" else ["", "", "", ""]
            point = [r.x0, r.y0] if r.kind == "point" else ["", ""]
            writer.writerow([query.query_id, shown, *box, *point, "" if query.label is None else query.label])
    return path
