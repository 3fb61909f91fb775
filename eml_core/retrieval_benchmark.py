r"""Quantitative benchmarks of retrieval: region retrieval on composite images, and Market-1501's re-id rules.

The paper evaluates interactive retrieval with a human study only (Section
VII-B). Here it gets a ground truth.

**Composite benchmark** (:func:`generate_composites`, :func:`evaluate_composites`).
Images are built from the objects of the embedded default data
(:mod:`eml_core.synthetic`, cut out of photographs bundled with scikit-image):
each composite holds **two objects of different classes**, one in each half of
a wide canvas, at exactly known boxes, on a tinted texture. A query is a
composite plus the box of one of its objects; a gallery image is **relevant**
when it contains an object of that class (wherever, whatever its neighbour).
Overall similarity cannot tell which of the query's two objects is meant, so
it is the natural lower baseline; a region method that reads the region should
beat it. For every method of :mod:`eml_core.region_retrieval`:

* precision@k = |relevant among the top k| / k, averaged over queries (k = 1, 5, 10);
* AP = (1 / R) sum_{i: rank i relevant} precision@i over the whole ranking, R the
  number of relevant gallery images; mAP its mean over queries (computed by
  pytorch-metric-learning's ``mean_average_precision``, see :func:`average_precision`).

**Market-1501** (:func:`reid_evaluation`): the benchmark's rules, as in its
official evaluation code and in torchreid: for each query, gallery images of
the junk id -1 and images of the same person taken by the **same camera** are
removed from the ranking; distractors (id 0) stay, as wrong matches. CMC Rank-k
= share of queries with a true match in the top k of what remains; mAP as
above (non-interpolated AP, torchreid's; the original MATLAB code averages
adjacent precisions, a trapezoid, and gives slightly different values).
Queries left without any true match are skipped and counted.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eml_core.datasets import ErrorRecord, Item
from eml_core.errors import ArgumentError, EmlError
from eml_core.examples import packaged_image
from eml_core.gallery_index import ExactSearch, GalleryIndex
from eml_core.models import EmbeddingModel
from eml_core.region_retrieval import (
    DEFAULT_METHODS,
    RETRIEVAL_METHODS,
    Region,
    RegionQuery,
    check_methods,
    query_vectors,
    rankings_from_vectors,
)

PRECISION_KS = (1, 5, 10)
COMPOSITE_VERSION = 1
COMPOSITE_COLUMNS = ("image", "role", "class_a", "a_x0", "a_y0", "a_x1", "a_y1",
                     "class_b", "b_x0", "b_y0", "b_x1", "b_y1")


# ---------------------------------------------------------------------------------------------
# ranking metrics


def precision_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """Per query (rows of a ranked boolean relevance matrix): share of relevant items among the first k."""
    relevance = np.asarray(relevance, dtype=bool)
    return relevance[:, :k].sum(1) / float(k)


def average_precision(relevance: np.ndarray, relevant_counts) -> np.ndarray:
    r"""Per-query AP of ranked boolean relevance rows: :math:`\frac{1}{R}\sum_{i: rel_i} \mathrm{prec}@i`.

    ``relevant_counts`` R (per query) counts every relevant gallery item,
    including any the rows do not reach. Computed with pytorch-metric-learning's
    ``mean_average_precision``, each query given its own label so that its
    per-class average is its own AP. A query with R = 0 gets NaN.
    """
    from pytorch_metric_learning.utils.accuracy_calculator import mean_average_precision

    relevance = np.asarray(relevance, dtype=bool)
    counts = np.asarray(relevant_counts, dtype=np.int64)
    out = np.full(len(relevance), np.nan)
    usable = np.flatnonzero(counts > 0)
    if len(usable) == 0 or relevance.shape[1] == 0:
        return out
    labels = torch.arange(len(usable))
    knn_labels = torch.where(torch.from_numpy(relevance[usable]), labels.unsqueeze(1), torch.tensor(-1))
    per_query = mean_average_precision(
        knn_labels, labels.unsqueeze(1), False, (labels, torch.from_numpy(counts[usable])),
        avg_of_avgs=False, return_per_class=True, label_comparison_fn=lambda gt, knn: gt == knn)
    out[usable] = per_query
    return out


# ---------------------------------------------------------------------------------------------
# composite images


@dataclass(frozen=True)
class CompositeConfig:
    """Two objects per image, one per half of a canvas ``aspect`` times wider than tall."""

    gallery_images: int = 240
    query_images: int = 24
    classes: int = 12
    seed: int = 1
    min_height: int = 192
    max_height: int = 256
    aspect: float = 2.0
    min_scale: float = 0.55     # object's longer side, as a share of the shorter side of its half
    max_scale: float = 0.9
    version: int = COMPOSITE_VERSION


@dataclass(frozen=True)
class CompositeImage:
    image_id: str
    path: str
    role: str                                   # gallery or query
    classes: tuple[int, int]
    boxes: tuple[tuple[float, float, float, float], tuple[float, float, float, float]]  # pixel edges
    size: tuple[int, int]


def _paste(canvas: np.ndarray, rng: np.random.Generator, cutout, x_range: tuple[int, int],
           config: CompositeConfig) -> tuple[float, float, float, float]:
    """Paste an augmented object inside columns ``x_range`` of ``canvas``; returns its exact box (pixel edges)."""
    rgb, mask = cutout
    height = canvas.shape[0]
    left, right = x_range
    longer = rng.uniform(config.min_scale, config.max_scale) * min(height, right - left)
    factor = longer / max(rgb.shape[:2])
    width_px, height_px = max(8, round(rgb.shape[1] * factor)), max(8, round(rgb.shape[0] * factor))
    resized = Image.fromarray((rgb * 255).astype(np.uint8)).resize((width_px, height_px), Image.Resampling.BILINEAR)
    obj = np.asarray(resized, dtype=np.float32) / 255.0
    obj_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width_px, height_px),
                                                                              Image.Resampling.NEAREST)) > 127
    if rng.random() < 0.5:
        obj, obj_mask = obj[:, ::-1], obj_mask[:, ::-1]
    obj = np.clip(obj * rng.uniform(0.75, 1.25, size=3) * rng.uniform(0.85, 1.15), 0, 1)
    top = int(rng.integers(0, height - height_px + 1))
    start = int(rng.integers(left, right - width_px + 1))
    region = canvas[top:top + height_px, start:start + width_px]
    region[obj_mask] = obj[obj_mask]
    ys, xs = np.nonzero(obj_mask)
    return (float(start + xs.min()), float(top + ys.min()), float(start + xs.max() + 1), float(top + ys.max() + 1))


def generate_composites(folder: str | Path, config: CompositeConfig = CompositeConfig()) -> Path:
    """Write ``images/`` and ``composites.csv`` (columns :data:`COMPOSITE_COLUMNS`) into ``folder``/composites.

    Deterministic from ``config.seed``. Class c is object c of
    :data:`eml_core.synthetic.OBJECTS` (label c, as in the embedded default data).
    Each image draws two different classes uniformly; which one is on the left
    is random. Returns the dataset folder.
    """
    from eml_core.synthetic import BACKGROUNDS, OBJECTS, _background, _object_cutout

    if not 2 <= config.classes <= len(OBJECTS):
        raise ArgumentError("classes", f"must be in [2, {len(OBJECTS)}], got {config.classes}")
    if config.gallery_images < 1 or config.query_images < 1:
        raise ArgumentError("gallery_images/query_images", "need at least one image each")
    root = Path(folder) / "composites"
    staging = Path(folder) / ".composites.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    rng = np.random.default_rng(config.seed)
    textures = [np.asarray(Image.open(packaged_image(name)).convert("L"), dtype=np.float32) / 255.0
                for name in BACKGROUNDS]
    cutouts = [_object_cutout(file_name, index) for index, (_, file_name) in enumerate(OBJECTS[:config.classes])]
    lines = []
    for role, count in (("gallery", config.gallery_images), ("query", config.query_images)):
        for number in range(count):
            height = int(rng.integers(config.min_height, config.max_height + 1))
            width = round(height * config.aspect)
            canvas = _background(rng, textures, height, width)
            first, second = (int(c) for c in rng.choice(config.classes, size=2, replace=False))
            halves = [(0, width // 2), (width // 2, width)]
            box_a = _paste(canvas, rng, cutouts[first], halves[0], config)
            box_b = _paste(canvas, rng, cutouts[second], halves[1], config)
            name = f"{role}_{number:04d}.png"
            Image.fromarray((canvas * 255).round().astype(np.uint8)).save(staging / "images" / name)
            lines.append([f"images/{name}", role, first + 1, *box_a, second + 1, *box_b])
    with open(staging / "composites.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COMPOSITE_COLUMNS)
        writer.writerows(lines)
    (staging / "generator.json").write_text(json.dumps(asdict(config), indent=2))
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return root


def ensure_composites(folder: str | Path, config: CompositeConfig = CompositeConfig()) -> Path:
    """Generate the composites unless ``folder`` already holds a set made with the same config."""
    stamp = Path(folder) / "composites" / "generator.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(config):
        return stamp.parent
    return generate_composites(folder, config)


@dataclass
class CompositeBenchmark:
    root: str
    gallery: list[CompositeImage]
    queries: list[CompositeImage]

    def gallery_items(self) -> list[Item]:
        """The gallery as dataset items (label: the class of the left object; relevance uses both)."""
        return [Item(c.image_id, c.path, Path(c.path).relative_to(self.root).as_posix(), c.classes[0], "test",
                     None, c.size) for c in self.gallery]

    def region_queries(self) -> list[RegionQuery]:
        """Two queries per query image: the box of each of its objects (label: that object's class)."""
        return [RegionQuery(f"{c.image_id}:{side}", c.path, Region.box(*box), label)
                for c in self.queries for side, label, box in (("a", c.classes[0], c.boxes[0]),
                                                               ("b", c.classes[1], c.boxes[1]))]

    def contents(self) -> dict[str, set[int]]:
        return {c.image_id: set(c.classes) for c in self.gallery}


def load_composites(root: str | Path) -> CompositeBenchmark:
    """Read a folder written by :func:`generate_composites` (its CSV is checked, not trusted)."""
    root = Path(root)
    table = root / "composites.csv"
    if not table.is_file():
        raise EmlError(f"{table}: composite benchmark index is missing (generate it with generate_composites)")
    gallery: list[CompositeImage] = []
    queries: list[CompositeImage] = []
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COMPOSITE_COLUMNS:
            raise EmlError(f"{table}: expected columns {', '.join(COMPOSITE_COLUMNS)}")
        for number, row in enumerate(reader, start=2):
            try:
                path = root / row["image"]
                if row["role"] not in ("gallery", "query") or ".." in Path(row["image"]).parts:
                    raise ValueError(f"bad role or path {row['role']!r} {row['image']!r}")
                classes = (int(row["class_a"]), int(row["class_b"]))
                a, b = (tuple(float(row[f"{s}_{c}"]) for c in ("x0", "y0", "x1", "y1")) for s in "ab")
                boxes = ((a[0], a[1], a[2], a[3]), (b[0], b[1], b[2], b[3]))
                with Image.open(path) as image:
                    size = (image.height, image.width)
            except (ValueError, KeyError, OSError) as error:
                raise EmlError(f"{table}, line {number}: {error}") from None
            item = CompositeImage(Path(row["image"]).stem, str(path), row["role"], classes, boxes, size)
            (gallery if item.role == "gallery" else queries).append(item)
    return CompositeBenchmark(str(root), gallery, queries)


def _metric_rows(benchmark: str, method: str, relevance: np.ndarray, counts: np.ndarray, ks) -> list[dict]:
    region_feature = RETRIEVAL_METHODS[method].region_feature if method in RETRIEVAL_METHODS else "whole_image"
    rows = [{"benchmark": benchmark, "method": method, "region_feature": region_feature, "metric": "precision",
             "k": int(k), "value": float(precision_at_k(relevance, k).mean()), "count": len(relevance)} for k in ks]
    ap = average_precision(relevance, counts)
    rows.append({"benchmark": benchmark, "method": method, "region_feature": region_feature, "metric": "map",
                 "k": None, "value": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
                 "count": int(np.isfinite(ap).sum())})
    return rows


def evaluate_composites(model: EmbeddingModel, index: GalleryIndex, benchmark: CompositeBenchmark,
                        methods=DEFAULT_METHODS, ks=PRECISION_KS, top_k: int = 10, device: str = "cpu",
                        batch_size: int = 16) -> tuple[list[dict], list[dict], list[ErrorRecord]]:
    """Rank the composite gallery (already in ``index``) for every query region and method.

    Returns ``(retrieval_rankings rows (top ``top_k``), retrieval_eval rows, errors)``. Metrics use the whole
    ranking of every query; a method is scored on the queries it could answer (``count``).
    """
    methods = check_methods(methods)
    index.check_model(model)
    vectors, errors = query_vectors(model, benchmark.region_queries(), methods, index.similarity, device, batch_size,
                                    stage="composite_benchmark")
    rankings = rankings_from_vectors(index, vectors, methods, top_k, device)
    contents = benchmark.contents()
    gallery_ids = list(index.rows["image_id"])
    missing = [g for g in gallery_ids if g not in contents]
    if missing:
        raise EmlError(f"{index.location.location_of('')}: gallery image {missing[0]} is not part of the composite "
                       f"benchmark at {benchmark.root}")
    holds = {label: np.array([label in contents[g] for g in gallery_ids]) for label in
             {q.query.label for q in vectors}}
    searcher = index.searcher(device)
    eval_rows = []
    for method in methods:
        chosen = [qv for qv in vectors if method in qv.vectors]
        if not chosen:
            continue
        _, order = searcher.rank(np.stack([qv.vectors[method] for qv in chosen]))
        relevance = np.stack([holds[qv.query.label][row] for qv, row in zip(chosen, order, strict=False)])
        counts = np.array([holds[qv.query.label].sum() for qv in chosen])
        eval_rows.extend(_metric_rows("composite", method, relevance, counts, ks))
    return rankings, eval_rows, errors


# ---------------------------------------------------------------------------------------------
# Market-1501 rules


def reid_evaluation(query_vectors_, query_pids, query_cameras, gallery: ExactSearch | np.ndarray, gallery_pids,
                    gallery_cameras, ks=PRECISION_KS, chunk: int = 256) -> dict:
    """CMC Rank-k and mAP with Market-1501's rules (module docstring); returns
    ``{"cmc": {k: value}, "map": value, "queries": evaluated, "skipped": without a true match}``.

    ``query_vectors_`` (Q, l) are ranked against ``gallery`` (an :class:`ExactSearch`, or raw embeddings
    ranked by cosine).
    """
    search = gallery if isinstance(gallery, ExactSearch) else ExactSearch(gallery, "cosine")
    q_pids, q_cams = np.asarray(query_pids), np.asarray(query_cameras)
    g_pids, g_cams = np.asarray(gallery_pids), np.asarray(gallery_cameras)
    if len(q_pids) != len(query_vectors_) or len(g_pids) != len(search):
        raise ArgumentError("pids", "need one person id and camera per query and per gallery image")
    hits: dict[int, list[float]] = {k: [] for k in ks}
    aps = []
    skipped = 0
    for start in range(0, len(q_pids), chunk):
        _, order = search.rank(np.asarray(query_vectors_[start:start + chunk]))
        for row, q in zip(order, range(start, start + len(order)), strict=False):
            valid = (g_pids[row] != -1) & ~((g_pids[row] == q_pids[q]) & (g_cams[row] == q_cams[q]))
            relevant = g_pids[row][valid] == q_pids[q]
            if not relevant.any():
                skipped += 1
                continue
            for k in ks:
                hits[k].append(bool(relevant[:k].any()))
            aps.append(average_precision(relevant[None, :], [int(relevant.sum())])[0])
    return {"cmc": {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()},
            "map": float(np.mean(aps)) if aps else float("nan"), "queries": len(aps), "skipped": skipped}


def reid_eval_rows(result: dict, benchmark: str = "market1501", method: str = "overall") -> list[dict]:
    """``retrieval_eval`` rows of a :func:`reid_evaluation` result."""
    rows = [{"benchmark": benchmark, "method": method, "region_feature": "whole_image", "metric": "cmc", "k": int(k),
             "value": value, "count": result["queries"]} for k, value in result["cmc"].items()]
    rows.append({"benchmark": benchmark, "method": method, "region_feature": "whole_image", "metric": "map",
                 "k": None, "value": result["map"], "count": result["queries"]})
    return rows


def evaluate_market1501(model: EmbeddingModel, queries: list[Item], index: GalleryIndex, device: str = "cpu",
                        batch_size: int = 32, ks=PRECISION_KS) -> tuple[list[dict], dict, list[ErrorRecord]]:
    """Overall retrieval of Market-1501 ``queries`` (items with ``camera``) against an index of its gallery.

    Returns ``(retrieval_eval rows, the reid_evaluation result, errors)``. The
    index must hold ``bounding_box_test`` (its rows carry labels and cameras) and
    have been built with ``model``.
    """
    from eml_core.retrieval import embed_items

    index.check_model(model)
    gallery = index.rows
    if gallery["camera"].isna().any():
        raise EmlError(f"{index.location.location_of('')}: some gallery images have no camera; re-id rules need "
                       f"Market-1501 file names")
    kept, embeddings, errors = embed_items(model, queries, batch_size=batch_size, device=device, stage="reid_queries")
    vectors = embeddings if index.similarity == "dot" else torch.nn.functional.normalize(embeddings, dim=1)
    result = reid_evaluation(vectors.numpy(), [i.label for i in kept], [getattr(i, "camera", None) for i in kept],
                             index.searcher(device), gallery["label"].to_numpy(), gallery["camera"].to_numpy(), ks)
    return reid_eval_rows(result), result, errors


def eval_table_text(rows: list[dict]) -> str:
    """A plain-text table of ``retrieval_eval`` rows: one line per method, one column per metric."""
    buffer = io.StringIO()
    columns = []
    for row in rows:
        name = f"{row['metric']}@{row['k']}" if row["k"] is not None else row["metric"]
        if name not in columns:
            columns.append(name)
    buffer.write(f"{'benchmark':12} {'method':18} {'region_feature':14} " + " ".join(f"{c:>12}" for c in columns)
                 + f" {'queries':>8}\n")
    grouped: dict[tuple, dict] = {}
    for row in rows:
        key = (row["benchmark"], row["method"], row["region_feature"])
        name = f"{row['metric']}@{row['k']}" if row["k"] is not None else row["metric"]
        grouped.setdefault(key, {})[name] = row["value"]
        grouped[key]["count"] = row["count"]
    for (benchmark, method, feature), values in grouped.items():
        cells = " ".join(f"{values[c]:12.4f}" if c in values else f"{'':>12}" for c in columns)
        buffer.write(f"{benchmark:12} {method:18} {feature:14} {cells} {values['count']:8d}\n")
    return buffer.getvalue()
