"""What the review dashboard reads, and the only things it may change: read-only views of a results root (the run
catalog, each run's manifest, tables and figures) and of study folders, plus the two study actions that go
through the MTurk gateway (approve, reject a held assignment).

The dashboard (``flows/dashboard``) is a thin Streamlit layer over these functions: every read goes through
:class:`eml_core.results.ResultsLocation` (local folders and S3 alike), every table is checked against its schema,
and nothing here writes to a results location. Functions return plain pandas / numpy values so the pages can
cache them (a finished run never changes: its tables are read once per dashboard process).

**Gallery.** A localization run stores each scored item's raw map at feature resolution
(``localization_maps``), so the gallery draws a method's map over the image, with its box at the method's best
threshold and the true box, without the model. The image itself is read from the dataset folder the run's
manifest names, when this machine has it; otherwise the map is drawn on a grey canvas of the image's size.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eml_core.errors import EmlError
from eml_core.results import ResultsError, ResultsLocation
from eml_core.stored_maps import decode
from eml_core.tables import SCHEMAS, frame
from tasks.runs import read_catalog

# What reading a run or a study folder can raise: the dashboard shows these as one line on the page.
READ_ERRORS = (EmlError, OSError, ValueError, KeyError)
TILE = 224
GALLERY_COLUMNS = ["pair_id", "image_id", "image", "label", "side", "method", "threshold", "box_x0", "box_y0",
                   "box_x1", "box_y1", "gt_x0", "gt_y0", "gt_x1", "gt_y1", "iou", "correct"]


def check_results_root(root: str) -> None:
    """The root exists (local) and its catalog reads (local or S3); ResultsError / EmlError naming it otherwise."""
    store = ResultsLocation(root)
    if not store.is_s3 and not Path(root).is_dir():
        raise ResultsError(f"{root}: no such results folder")
    read_catalog(root)


# --- the catalog -------------------------------------------------------------------------------------


def catalog(root: str) -> pd.DataFrame:
    """Every finished run, newest first, with its headline metrics parsed (``headline`` holds a dict)."""
    table = read_catalog(root).iloc[::-1].reset_index(drop=True)
    table["headline"] = [json.loads(h or "{}") for h in table["headline"]]
    return table


def headline_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run (index: run id), one column per headline metric."""
    return pd.DataFrame.from_records(list(runs["headline"]), index=list(runs["run_id"])).sort_index(axis=1)


def compare_runs(runs: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Headline metrics of two runs side by side: ``metric, <first>, <second>, delta`` (second - first)."""
    by_id = runs.set_index("run_id")
    a, b = by_id.loc[first, "headline"], by_id.loc[second, "headline"]
    rows = [{"metric": metric, "first": a.get(metric), "second": b.get(metric),
             "delta": (b[metric] - a[metric]) if metric in a and metric in b else None}
            for metric in sorted(set(a) | set(b))]
    return pd.DataFrame(rows, columns=["metric", "first", "second", "delta"])


def compare_parameters(runs: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """The run parameters (and model, dataset, commit) that differ between two runs."""
    by_id = runs.set_index("run_id")
    rows = []
    for field in ("dataset", "model", "checkpoint_sha256", "git_commit"):
        if by_id.loc[first, field] != by_id.loc[second, field]:
            rows.append({"parameter": field, "first": by_id.loc[first, field], "second": by_id.loc[second, field]})
    a, b = (json.loads(by_id.loc[run, "parameters"] or "{}") for run in (first, second))
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            rows.append({"parameter": key, "first": json.dumps(a.get(key)), "second": json.dumps(b.get(key))})
    return pd.DataFrame(rows, columns=["parameter", "first", "second"])


# --- one run -----------------------------------------------------------------------------------------


def manifest(location: str) -> dict:
    return ResultsLocation(location).read_json("manifest.json")


def has_table(location: str, name: str) -> bool:
    return ResultsLocation(location).exists(f"{name}.parquet")


def run_table(location: str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A run's table ``<name>.parquet`` checked against its schema (only ``columns`` of it, when given)."""
    store = ResultsLocation(location)
    if columns is None:
        return store.read_table(f"{name}.parquet", name)
    import io

    try:
        table = pq.read_table(io.BytesIO(store.read_bytes(f"{name}.parquet")), columns=columns,
                              page_checksum_verification=True)
    except ResultsError:
        raise
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a corrupt or foreign file
        raise ResultsError(f"{store.location_of(name + '.parquet')}: not a readable {name} table ({error})") from None
    expected = SCHEMAS[name]
    for column in columns:
        if not table.schema.field(column).type.equals(expected.field(column).type):
            raise ResultsError(f"{store.location_of(name + '.parquet')}: column {column} is "
                               f"{table.schema.field(column).type}, not {expected.field(column).type}")
    return table.to_pandas()


def figures(location: str) -> list[str]:
    """The run's PNG figures (relative paths), those its manifest lists first."""
    store = ResultsLocation(location)
    listed = [f for f in manifest(location).get("figures", []) if isinstance(f, str)]
    found = [f for f in store.list("figures") if f.endswith(".png")]
    return list(dict.fromkeys(listed + found))


def read_bytes(location: str, relative: str) -> bytes:
    return ResultsLocation(location).read_bytes(relative)


# --- localization ------------------------------------------------------------------------------------


def accuracy_curves(location: str) -> pd.DataFrame:
    """Accuracy (IoU > 0.5) against threshold on the run's whole (fine) grid: ``method, threshold, accuracy,
    count``, from ``localization_items``."""
    items = _items_arrow(location, ["method", "threshold", "correct"])
    grouped = items.group_by(["method", "threshold"]).aggregate([("correct", "mean"), ("correct", "count")])
    table = grouped.to_pandas().rename(columns={"correct_mean": "accuracy", "correct_count": "count"})
    return table.sort_values(["method", "threshold"], kind="stable").reset_index(drop=True)


def _items_arrow(location: str, columns: list[str]):
    import io

    store = ResultsLocation(location)
    try:
        return pq.read_table(io.BytesIO(store.read_bytes("localization_items.parquet")), columns=columns,
                             page_checksum_verification=True)
    except ResultsError:
        raise
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise ResultsError(f"{store.location_of('localization_items.parquet')}: not readable ({error})") from None


def best_items(location: str) -> pd.DataFrame:
    """One row per scored (pair, side, method): the item's box, IoU and correctness at that method's best
    threshold (Table II's), the gallery's material."""
    import pyarrow as pa

    best = run_table(location, "localization_best")
    items = _items_arrow(location, GALLERY_COLUMNS)
    # each row's method's best threshold, looked up in one pass (no per-method scans of the whole table)
    position = pc.index_in(items["method"], value_set=pa.array(list(best["method"]), pa.string()))
    wanted = pc.take(pa.array(list(best["best_threshold"]), pa.float64()), position)
    table = items.filter(pc.fill_null(pc.equal(items["threshold"], wanted), False)).to_pandas()
    return table.sort_values(["pair_id", "side", "method"], kind="stable").reset_index(drop=True)


def per_class_accuracy(items: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per class and method at each method's best threshold: ``label, method, accuracy, count``."""
    grouped = items.groupby(["label", "method"])["correct"].agg(["mean", "count"]).reset_index()
    return grouped.rename(columns={"mean": "accuracy"})


def gallery_frame(items: pd.DataFrame) -> pd.DataFrame:
    """One row per scored image (pair, side) with each method's IoU and correctness as columns
    ``iou/<method>``, ``correct/<method>`` (the filters read these)."""
    if items.empty:
        return pd.DataFrame(columns=["pair_id", "side", "image_id", "image", "label"])
    base = items.drop_duplicates(["pair_id", "side"])[["pair_id", "side", "image_id", "image", "label"]]
    wide = items.pivot(index=["pair_id", "side"], columns="method", values=["iou", "correct"])
    wide.columns = [f"{what}/{method}" for what, method in wide.columns]
    return base.merge(wide.reset_index(), on=["pair_id", "side"]).reset_index(drop=True)


@dataclass(frozen=True)
class GalleryFilter:
    """Which images the gallery shows: a class, an IoU range for one method, and 'A right where B is wrong'."""

    label: int | None = None
    iou_method: str | None = None
    iou_low: float = 0.0
    iou_high: float = 1.0
    right: str | None = None    # method A: correct ...
    wrong: str | None = None    # ... where method B is wrong


def filter_gallery(gallery: pd.DataFrame, chosen: GalleryFilter) -> pd.DataFrame:
    keep = np.ones(len(gallery), dtype=bool)
    if chosen.label is not None:
        keep &= (gallery["label"] == chosen.label).to_numpy()
    if chosen.iou_method is not None:
        iou = gallery[f"iou/{chosen.iou_method}"].astype(float).to_numpy()
        keep &= (iou >= chosen.iou_low) & (iou <= chosen.iou_high)
    if chosen.right is not None and chosen.wrong is not None:
        keep &= gallery[f"correct/{chosen.right}"].fillna(False).astype(bool).to_numpy()
        keep &= ~gallery[f"correct/{chosen.wrong}"].fillna(True).astype(bool).to_numpy()
    return gallery[keep].reset_index(drop=True)


class StoredMaps:
    """A run's ``localization_maps``, indexed by (pair, side, method); maps are decoded only when drawn."""

    def __init__(self, location: str):
        store = ResultsLocation(location)
        self.table = store.read_table("localization_maps.parquet", "localization_maps") \
            if store.exists("localization_maps.parquet") else frame("localization_maps", [])
        keys = zip(self.table["pair_id"], self.table["side"], self.table["method"], strict=True)
        self.index = {key: n for n, key in enumerate(keys)}

    def __len__(self) -> int:
        return len(self.table)

    def row(self, pair_id: str, side: str, method: str) -> dict | None:
        n = self.index.get((pair_id, side, method))
        return None if n is None else self.table.iloc[n].to_dict()


def dataset_image(run_manifest: dict, relative: str, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """The item's image from the dataset folder the manifest names (RGB uint8), or a grey canvas of ``size``
    (height, width) when this machine cannot read it; the flag says which."""
    from eml_core.images import load_image  # torch: imported when the first image is drawn, not at start

    root = (run_manifest.get("dataset") or {}).get("root")
    if root and relative and not Path(relative).is_absolute() and ".." not in Path(relative).parts:
        for candidate in (Path(root) / relative, Path(root) / "images" / relative):
            if candidate.is_file():
                try:
                    picture = load_image(candidate).to_uint8()
                except (EmlError, OSError):
                    break
                if picture.shape[:2] == tuple(size):
                    return picture, True
    return np.full((*size, 3), 96, np.uint8), False


def render_tile(picture: np.ndarray, stored: dict | None, item: dict, method: str, tile: int = TILE) -> np.ndarray:
    """One method's map over the image (JET; rectified, bilinearly upsampled and divided by its max, as
    :mod:`eml_core.presentation` presents maps), its box at the best threshold (red) and the true box (green),
    captioned with the method and IoU; ``tile`` pixels wide. The map is upsampled straight to the tile's size: the
    same presentation, evaluated at the resolution it is shown at (the boxes come from the run's table)."""
    import torch

    from eml_core.presentation import normalised_at_image_size, overlay

    height, width = picture.shape[:2]
    scale = tile / max(width, 1)
    size = (max(1, round(height * scale)), tile)
    shown = cv2.resize(picture, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    if stored is not None:
        normalised, _ = normalised_at_image_size(torch.from_numpy(decode(stored)), size)
        shown = overlay(shown, normalised)
    shown = np.ascontiguousarray(shown)
    thickness = 2
    for keys, colour in ((("gt_x0", "gt_y0", "gt_x1", "gt_y1"), (0, 255, 0)),
                         (("box_x0", "box_y0", "box_x1", "box_y1"), (255, 0, 0))):
        values = [item.get(k) for k in keys]
        if all(v is not None and np.isfinite(v) for v in values):
            x0, y0, x1, y1 = (int(round(v * scale)) for v in values)
            cv2.rectangle(shown, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thickness)
    iou = item.get("iou")
    caption = f"{method} IoU {iou:.2f}" if iou is not None and np.isfinite(iou) else f"{method} no box"
    cv2.rectangle(shown, (0, 0), (tile - 1, 18), (0, 0, 0), -1)  # a dark strip: the caption stays readable
    cv2.putText(shown, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return shown


def gallery_tiles(location: str, run_manifest: dict, maps: StoredMaps, items: pd.DataFrame, pair_id: str, side: str,
                  methods: list[str]) -> tuple[list[np.ndarray], bool]:
    """Every method's tile of one scored image, and whether the real image was found."""
    rows = items[(items["pair_id"] == pair_id) & (items["side"] == side)]
    by_method = {r["method"]: r for r in rows.to_dict("records")}
    stored = {m: maps.row(pair_id, side, m) for m in methods}
    any_stored = next((s for s in stored.values() if s is not None), None)
    if any_stored is not None:
        size = (int(any_stored["image_height"]), int(any_stored["image_width"]))
    else:  # no stored map (a run from before maps were stored): the box extents bound the image
        first = next(iter(by_method.values()))
        size = (int(np.ceil(first["gt_y1"])) + 1, int(np.ceil(first["gt_x1"])) + 1)
    picture, found = dataset_image(run_manifest, str(rows["image"].iloc[0]) if len(rows) else "", size)
    tiles = [render_tile(picture, stored[m], by_method.get(m, {}), m) for m in methods if m in by_method]
    return tiles, found


# --- studies -----------------------------------------------------------------------------------------


def study_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The catalog's study analyses (kind ``study``), newest first."""
    return runs[runs["kind"] == "study"].reset_index(drop=True)


def study_folders(runs: pd.DataFrame, extra: list[str]) -> dict[str, str]:
    """``{study id: folder}`` of the studies to show: those given on the command line, then those the
    catalog's analyses name whose folder this machine can read."""
    from amt.ledger import Ledger

    found: dict[str, str] = {}
    for folder in extra:
        found.setdefault(Ledger.load(folder).study_id, folder)
    for row in study_runs(runs).itertuples(index=False):
        try:
            named = manifest(row.location).get("study_folder")
        except EmlError:
            continue
        if isinstance(named, str) and (Path(named) / "ledger.json").is_file():
            found.setdefault(str(row.dataset), named)
    return found


def study_view(folder: str) -> dict:
    """Status (progress, spend, lab participants), the analysis tables when present, per-item answers and the
    held assignments of a study folder, read now."""
    from amt.responses import read_study_table
    from amt.status import held_assignments, item_breakdown, study_status

    status = study_status(folder)
    ledger, responses = status["ledger"], status["responses"]
    return {**status, "summary": read_study_table(Path(folder), "study_summary"),
            "worker_patterns": read_study_table(Path(folder), "worker_patterns"),
            "items": item_breakdown(ledger, responses), "held": held_assignments(ledger, responses),
            "live": ledger.launched_live, "chart": _file(Path(folder) / "study_summary.png")}


def _file(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


ANSWER_WORDING = {"2": "A clearly more reasonable", "1": "A slightly more reasonable", "0": "equally reasonable",
                  "-1": "A slightly less reasonable", "-2": "A clearly less reasonable"}


def approve(folder: str, assignment_id: str, live: bool) -> None:
    """Approve a held assignment through the gateway (the study's own mode; sandbox unless ``live``)."""
    from tasks.studies import approve_assignment

    with _aws_errors_in_one_line("approve"):
        approve_assignment(folder, assignment_id, live)


def reject(folder: str, assignment_id: str, reason: str, live: bool) -> None:
    """Reject a held assignment with a reason the worker sees, through the gateway."""
    from tasks.studies import reject_assignment

    with _aws_errors_in_one_line("reject"):
        reject_assignment(folder, assignment_id, reason, live)


@contextlib.contextmanager
def _aws_errors_in_one_line(action: str):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as error:  # access denied, throttled, unreachable: never a secret
        raise EmlError(f"{action}: AWS error: {type(error).__name__}: {error}") from None


# --- orientation and retrieval -------------------------------------------------------------------------


def thumbnail(path: str, tile: int = 160) -> np.ndarray | None:
    """An image file as a ``tile``-pixel-high RGB thumbnail, or None when this machine cannot read it."""
    from eml_core.images import load_image

    try:
        picture = load_image(path).to_uint8()
    except (EmlError, OSError, ValueError):
        return None
    height, width = picture.shape[:2]
    return cv2.resize(picture, (max(1, round(width * tile / height)), tile), interpolation=cv2.INTER_AREA)


def ranking_strip(rankings: pd.DataFrame, tile: int = 120) -> np.ndarray | None:
    """The ranked gallery images of one (query, method), left to right, each captioned with its rank, label
    and score; None when none of the files is readable here."""
    tiles = []
    for row in rankings.sort_values("rank").itertuples(index=False):
        picture = thumbnail(str(row.gallery_image), tile)
        if picture is None:
            picture = np.full((tile, tile, 3), 96, np.uint8)
        picture = picture.copy()
        cv2.putText(picture, f"#{row.rank} c{row.gallery_label} {row.score:.2f}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(picture)
    return np.concatenate(tiles, axis=1) if tiles else None


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port another server holds (before the dashboard process starts)."""
    import errno
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            reason = "is in use (another server?); pick another with --port" if error.errno == errno.EADDRINUSE \
                else f"cannot be used ({error.strerror})"
            raise EmlError(f"port {port} on {host} {reason}") from None
