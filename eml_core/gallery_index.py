r"""A gallery embedded once: the index interactive retrieval searches (paper Section VII-B).

Partial similarity of a query region against gallery image g (paper Eq. 5 and
:mod:`eml_core.decomposition`):

.. math::  s(g) = \frac{f \cdot E_g}{\lVert E_q\rVert\,\lVert E_g\rVert}
                = \frac{f}{\lVert E_q\rVert} \cdot \hat E_g, \qquad \hat E_g = E_g / \lVert E_g\rVert,

so once the gallery's embeddings are stored, ranking a query vector is one
matrix-vector product with the L2-normalised gallery :math:`\hat E` (G x l):
no model call per gallery image, the embeddings reused as they are. Overall
similarity (``f = E_q``) and the crop/mask baselines (``f`` = embedding of the
edited query) go through the same product. For models trained with a dot
product ("no norm", :data:`SIMILARITIES`), the stored matrix is E itself.

**On disk** (a :class:`~eml_core.results.ResultsLocation`: local folder or ``s3://``):

* ``index.json`` -- the header: format, the model's fingerprint and config,
  similarity, embedding size, the **root** the image paths are relative to
  (absolute, and relative to the index folder), and the list of committed parts
  with their row counts and SHA-256s. The header is the commit point: a part
  file it does not list does not exist for readers.
* ``parts/<key>.npy`` -- float32 embeddings (n x l, raw, not normalised: partial
  similarity needs ``|E_g|``) and ``parts/<key>.parquet`` -- the rows of table
  ``gallery_index_items`` (image id, path relative to the root, label, camera,
  split, size), in the same order. ``key`` hashes the part's relative paths, so
  re-embedding the same shard rewrites the same files.

**Appending** embeds only images whose path (relative to the root) the index
does not hold: appending the same images again embeds nothing. A sharded flow
calls :func:`embed_gallery_shard` + :meth:`GalleryIndex.write_part` per shard
(in parallel, on GPU workers) and :meth:`GalleryIndex.commit` once at the end
(single writer); :func:`build_index` does all of it in-process.

**Model fingerprint** (:func:`model_state_fingerprint`): SHA-256 over the
model's preprocessing, stride, module structure (types and hyperparameters) and
every tensor of its ``state_dict`` (name, dtype, shape, bytes). It is computed from the model
object, so an index cannot be searched with any other model, whatever file or
spec it came from (``tasks.provenance.model_fingerprint`` hashes a *spec*, for
caching; ``eml_core`` cannot import ``tasks``).

**Search.** :class:`ExactSearch` holds the normalised gallery as one torch
tensor (on the GPU when present) and ranks by ``vectors @ E_hat.T``.
:class:`IVFSearch` is the optional approximate backend for galleries too large to
scan (faiss IVF-Flat or IVF-PQ, inner product); its recall@k against exact
search is measured by :func:`recall_against_exact`. faiss is imported only there.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import torch

from eml_core.datasets import ErrorRecord, Item
from eml_core.errors import ArgumentError, EmlError
from eml_core.models import EmbeddingModel, resolve_device
from eml_core.results import ResultsError, ResultsLocation
from eml_core.tables import frame

INDEX_FORMAT = "eml-gallery-index/1"
HEADER = "index.json"
PARTS = "parts"
SIMILARITIES = ("cosine", "dot")


class GalleryIndexError(EmlError):
    """An index is missing, damaged, or cannot take what it was given; the message names it."""


class IndexModelMismatchError(GalleryIndexError):
    """The index was built with another model: its embeddings are not comparable with this model's."""


# ---------------------------------------------------------------------------------------------
# model fingerprint


def model_state_fingerprint(model: EmbeddingModel) -> str:
    """SHA-256 of what determines a model's embeddings: preprocessing, structure and weights.

    Every tensor of ``state_dict()`` contributes its name, dtype, shape and raw
    bytes (two random initialisations differ; a saved-then-loaded model keeps its
    fingerprint). The structure is every module's type and ``extra_repr`` (a GAP
    head from a GMP head, which hold no weights; a LeakyReLU's slope, a
    BatchNorm's eps). ``model.config`` is left out on purpose: it is metadata
    (training recipe, loss history) that ``load_model`` completes, so the same
    weights would otherwise get two fingerprints.
    """
    digest = hashlib.sha256()
    described = {
        "preprocessing": model.preprocessing.to_dict(),
        "stride": model.stride,
        "modules": [(name, type(module).__name__, module.extra_repr()) for name, module in model.named_modules()],
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"\n{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _model_summary(model: EmbeddingModel) -> str:
    config = model.config
    if config.get("kind") == "builtin":
        return f"{config.get('backbone')}:{config.get('head')} ({config.get('embedding_dim')}-d)"
    if config.get("factory"):
        return f"factory {config.get('factory')} {config.get('factory_kwargs') or ''}".strip()
    return "a model without a recorded config"


# ---------------------------------------------------------------------------------------------
# gallery shards


@dataclass
class GalleryPart:
    """Embeddings of one shard of gallery images with their ``gallery_index_items`` rows, in the same order."""

    rows: list[dict]
    embeddings: np.ndarray  # (n, l) float32, raw E_g

    @property
    def key(self) -> str:
        paths = "\n".join(sorted(row["relative_path"] for row in self.rows))
        return hashlib.sha256(paths.encode()).hexdigest()[:24]


def relative_to_root(path: str, root: str | os.PathLike) -> str | None:
    """``path`` relative to ``root`` as a POSIX path, or None when it is not inside ``root``."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if relative == "." or relative.startswith(".." + os.sep) or relative == ".." or os.path.isabs(relative):
        return None
    return PurePosixPath(Path(relative)).as_posix()


def item_row(item: Item, relative_path: str) -> dict:
    """The ``gallery_index_items`` row of an item."""
    return {"image_id": item.image_id, "relative_path": relative_path, "label": int(item.label),
            "camera": getattr(item, "camera", None), "split": item.split,
            "height": int(item.size[0]), "width": int(item.size[1])}


def embed_gallery_shard(model: EmbeddingModel, items: list[Item], root: str | os.PathLike, device: str = "cpu",
                        batch_size: int = 32, stage: str = "index") -> tuple[GalleryPart, list[ErrorRecord]]:
    """Embed one shard of gallery images (one model call per batch); returns the part and the shard's errors.

    An image outside ``root``, unreadable, or with a non-finite embedding is an
    error row and stays out of the part (a later append tries it again).
    """
    from eml_core.retrieval import embed_items

    errors: list[ErrorRecord] = []
    inside, relative = [], {}
    for item in items:
        path = relative_to_root(item.path, root)
        if path is None:
            errors.append(ErrorRecord(stage, item.image_id, item.path, None,
                                      f"image is not inside the index root {root}; left out"))
            continue
        inside.append(item)
        relative[item.image_id] = path
    kept, embeddings, embed_errors = embed_items(model, inside, batch_size=batch_size, device=device, stage=stage)
    errors.extend(embed_errors)
    finite = torch.isfinite(embeddings).all(1) if len(kept) else torch.zeros(0, dtype=torch.bool)
    rows, vectors = [], []
    for item, vector, ok in zip(kept, embeddings, finite.tolist(), strict=True):
        if not ok:
            errors.append(ErrorRecord(stage, item.image_id, item.path, None, "embedding is not finite; left out"))
            continue
        rows.append(item_row(item, relative[item.image_id]))
        vectors.append(vector.numpy())
    dim = int(embeddings.shape[1]) if embeddings.dim() == 2 else 0
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    return GalleryPart(rows, matrix), errors


# ---------------------------------------------------------------------------------------------
# the index


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


class GalleryIndex:
    """An embedded gallery in a results location; see the module docstring for the format."""

    def __init__(self, location: ResultsLocation, header: dict):
        self.location = location
        self.header = header
        self._rows: pd.DataFrame | None = None
        self._embeddings: np.ndarray | None = None
        self._searchers: dict = {}
        self._cache: dict = {}

    # --- creating and opening ------------------------------------------------------------------
    @classmethod
    def create(cls, location: str | ResultsLocation, model: EmbeddingModel, root: str | os.PathLike,
               similarity: str = "cosine", dataset: str | None = None) -> GalleryIndex:
        """A new empty index for ``model`` over images under ``root``; an existing index there is opened instead,
        after checking it was built with the same model, root and similarity."""
        location = location if isinstance(location, ResultsLocation) else ResultsLocation(location)
        if similarity not in SIMILARITIES:
            raise ArgumentError("similarity", f"expected one of {SIMILARITIES}, got {similarity!r}")
        root = os.path.abspath(root)
        if location.exists(HEADER):
            index = cls.open(location)
            index.check_model(model)
            if index.header["similarity"] != similarity:
                raise GalleryIndexError(f"{location.location_of(HEADER)}: the index ranks by "
                                        f"{index.header['similarity']} similarity, not {similarity}")
            if os.path.abspath(index.header["root"]) != root:
                raise GalleryIndexError(f"{location.location_of(HEADER)}: the index's images are under "
                                        f"{index.header['root']}, not {root}; build a separate index")
            return index
        now = datetime.now(UTC).isoformat(timespec="seconds")
        header: dict = {
            "format": INDEX_FORMAT,
            "model": {"fingerprint": model_state_fingerprint(model), "summary": _model_summary(model),
                      "config": model.config},
            "similarity": similarity,
            "embedding_dim": None,
            "root": root,
            "root_from_index": None if location.is_s3 else os.path.relpath(root, os.path.abspath(location.root)),
            "dataset": dataset,
            "parts": [],
            "count": 0,
            "created": now,
            "updated": now,
        }
        location.write_json(HEADER, header)
        return cls(location, header)

    @classmethod
    def open(cls, location: str | ResultsLocation) -> GalleryIndex:
        """Open an index, checking its header (format, fields, part list). Parts are read on first use."""
        location = location if isinstance(location, ResultsLocation) else ResultsLocation(location)
        where = location.location_of(HEADER)
        try:
            header = location.read_json(HEADER)
        except ResultsError as error:
            raise GalleryIndexError(f"{where}: no gallery index here ({error})") from None
        if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT:
            raise GalleryIndexError(f"{where}: not a gallery index (expected format {INDEX_FORMAT!r})")
        problems = []
        if not isinstance(header.get("model"), dict) or not isinstance(header["model"].get("fingerprint"), str):
            problems.append("'model.fingerprint' must be a string")
        if header.get("similarity") not in SIMILARITIES:
            problems.append(f"'similarity' must be one of {SIMILARITIES}")
        if not isinstance(header.get("root"), str):
            problems.append("'root' must be a path")
        parts = header.get("parts")
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and isinstance(p.get("key"), str) and p["key"].isalnum()
                and isinstance(p.get("rows"), int) and p["rows"] >= 0 for p in parts):
            problems.append("'parts' must list {key (alphanumeric), rows, sha256s}")
        dim = header.get("embedding_dim")
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            problems.append("'embedding_dim' must be a positive integer or null")
        if problems:
            raise GalleryIndexError(f"{where}: damaged index header: {'; '.join(problems)}")
        return cls(location, header)

    # --- model --------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.header["model"]["fingerprint"]

    @property
    def similarity(self) -> str:
        return self.header["similarity"]

    def check_model(self, model: EmbeddingModel) -> None:
        """Refuse a model other than the one the index was built with (:class:`IndexModelMismatchError`)."""
        given = model_state_fingerprint(model)
        if given != self.fingerprint:
            raise IndexModelMismatchError(
                f"{self.location.location_of(HEADER)}: the index was built with another model "
                f"({self.header['model'].get('summary')}, fingerprint {self.fingerprint[:12]}); the given model is "
                f"{_model_summary(model)} (fingerprint {given[:12]}). Its embeddings are not comparable: use the "
                f"model the index was built with, or build a new index with this one")

    # --- contents -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.header["count"])

    @property
    def rows(self) -> pd.DataFrame:
        """Table ``gallery_index_items`` of every indexed image, in index order (row i = embedding i)."""
        if self._rows is None:
            self._load()
        return self._rows

    @property
    def embeddings(self) -> np.ndarray:
        """Raw gallery embeddings ``(G, l)`` float32, in index order."""
        if self._embeddings is None:
            self._load()
        assert self._embeddings is not None
        return self._embeddings

    def iter_parts(self):
        """``(rows, embeddings)`` of each committed part, verified against the header; one part in memory at a time."""
        for record in self.header["parts"]:
            yield self._read_part(record)

    def _read_part(self, record: dict) -> tuple[pd.DataFrame, np.ndarray]:
        key = record["key"]
        data = self.location.read_bytes(f"{PARTS}/{key}.npy")
        table = self.location.read_bytes(f"{PARTS}/{key}.parquet")
        where = self.location.location_of(f"{PARTS}/{key}")
        if _sha256(data) != record.get("embeddings_sha256") or _sha256(table) != record.get("rows_sha256"):
            raise GalleryIndexError(f"{where}: part files do not match the SHA-256 the index header records "
                                    f"(damaged or replaced); rebuild the index")
        try:
            embeddings = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError) as error:
            raise GalleryIndexError(f"{where}.npy: not a readable .npy array ({error})") from None
        rows = self.location.read_table(f"{PARTS}/{key}.parquet", "gallery_index_items")
        dim = self.header.get("embedding_dim")
        if (embeddings.dtype != np.float32 or embeddings.ndim != 2 or len(embeddings) != record["rows"]
                or len(rows) != record["rows"] or (len(embeddings) and embeddings.shape[1] != dim)):
            raise GalleryIndexError(f"{where}: expected {record['rows']} rows of {dim} float32 values, found "
                                    f"{embeddings.dtype} {embeddings.shape} and {len(rows)} item rows")
        if not np.isfinite(embeddings).all():
            raise GalleryIndexError(f"{where}.npy: holds non-finite values")
        return rows, embeddings

    def _load(self) -> None:
        tables, matrices = [], []
        for rows, embeddings in self.iter_parts():
            tables.append(rows)
            matrices.append(embeddings)
        dim = self.header.get("embedding_dim") or 0
        self._rows = frame("gallery_index_items", pd.concat(tables, ignore_index=True) if tables else [])
        self._embeddings = np.concatenate(matrices) if matrices else np.zeros((0, dim), np.float32)
        duplicated = self._rows["relative_path"].duplicated()
        if duplicated.any():
            raise GalleryIndexError(f"{self.location.location_of(HEADER)}: image "
                                    f"{self._rows['relative_path'][duplicated].iloc[0]} is indexed twice")

    def relative_paths(self) -> set[str]:
        return set(self.rows["relative_path"])

    # --- paths --------------------------------------------------------------------------------
    def root_folder(self, root: str | os.PathLike | None = None) -> Path:
        """The folder image paths resolve against.

        ``root`` if given; else the recorded root *relative to the index folder*
        when it holds the first indexed image (the index moved together with its
        images, e.g. a copied project); else the recorded absolute root (the
        index alone moved). An index on S3 uses the recorded absolute root.
        """
        if root is not None:
            return Path(root)
        candidates = []
        if not self.location.is_s3 and self.header.get("root_from_index"):
            here = Path(os.path.abspath(self.location.root))
            candidates.append(Path(os.path.normpath(here / self.header["root_from_index"])))
        candidates.append(Path(self.header["root"]))
        probe = self.rows["relative_path"].iloc[0] if len(self) else None
        for candidate in candidates:
            if candidate.is_dir() and (probe is None or (candidate / probe).exists()):
                return candidate
        return Path(self.header["root"])

    def image_paths(self, root: str | os.PathLike | None = None) -> list[str]:
        """Paths of every indexed image under :meth:`root_folder`, in index order (kept per root)."""
        folder = self.root_folder(root)
        key = ("paths", str(folder))
        if key not in self._cache:
            self._cache[key] = [str(folder / relative) for relative in self.rows["relative_path"]]
        return self._cache[key]

    def positions(self, column: str) -> dict[str, list[int]]:
        """``{value: [row, ...]}`` of ``relative_path`` or ``image_id`` (kept)."""
        if column not in self._cache:
            table: dict[str, list[int]] = {}
            for position, value in enumerate(self.rows[column]):
                table.setdefault(value, []).append(position)
            self._cache[column] = table
        return self._cache[column]

    def position_of_file(self, path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[int]:
        """Rows whose image is the file ``path`` (symbolic links resolved; one lookup, not one per image)."""
        relative = relative_to_root(os.path.realpath(path), os.path.realpath(self.root_folder(root)))
        return list(self.positions("relative_path").get(relative, [])) if relative is not None else []

    # --- appending ----------------------------------------------------------------------------
    def missing_items(self, items: list[Item], stage: str = "index") -> tuple[list[Item], list[ErrorRecord]]:
        """The items whose image the index does not hold yet (by path relative to the root).

        An item outside the root, or whose image id the index already uses for
        another image, is an error row.
        """
        known = self.relative_paths()
        ids = dict(zip(self.rows["image_id"], self.rows["relative_path"], strict=True))
        missing, errors, seen = [], [], set()
        for item in items:
            relative = relative_to_root(item.path, self.header["root"])
            if relative is None:
                errors.append(ErrorRecord(stage, item.image_id, item.path, None,
                                          f"image is not inside the index root {self.header['root']}; left out"))
                continue
            if relative in known or relative in seen:
                continue
            if ids.get(item.image_id, relative) != relative:
                errors.append(ErrorRecord(stage, item.image_id, item.path, None,
                                          f"image id {item.image_id!r} already names {ids[item.image_id]} in the "
                                          f"index; left out"))
                continue
            seen.add(relative)
            missing.append(item)
        return missing, errors

    def write_part(self, part: GalleryPart) -> dict:
        """Write a part's files (safe to call from parallel shard tasks); returns its record for :meth:`commit`."""
        if not part.rows:
            return {"key": part.key, "rows": 0, "embeddings_sha256": None, "rows_sha256": None}
        data = _npy_bytes(part.embeddings)
        buffer = io.BytesIO()
        import pyarrow.parquet as pq

        from eml_core.tables import to_arrow

        pq.write_table(to_arrow("gallery_index_items", part.rows), buffer, write_page_checksum=True)
        table = buffer.getvalue()
        self.location.write_bytes(f"{PARTS}/{part.key}.npy", data)
        self.location.write_bytes(f"{PARTS}/{part.key}.parquet", table)
        return {"key": part.key, "rows": len(part.rows), "embedding_dim": int(part.embeddings.shape[1]),
                "embeddings_sha256": _sha256(data), "rows_sha256": _sha256(table)}

    def commit(self, records: list[dict]) -> int:
        """Add written parts to the header (one writer at a time); returns the number of images added.

        A part already committed is skipped, so committing twice changes nothing;
        a part holding an image the index already has is refused.
        """
        fresh = GalleryIndex.open(self.location)
        if fresh.fingerprint != self.fingerprint:
            raise IndexModelMismatchError(f"{self.location.location_of(HEADER)}: the index was rebuilt with "
                                          f"another model meanwhile")
        committed = {p["key"] for p in fresh.header["parts"]}
        known = fresh.relative_paths()
        added, dim = 0, fresh.header.get("embedding_dim")
        parts = list(fresh.header["parts"])
        for record in records:
            if record["rows"] == 0 or record["key"] in committed:
                continue
            if dim is not None and record["embedding_dim"] != dim:
                raise GalleryIndexError(f"{self.location.location_of(PARTS)}/{record['key']}: "
                                        f"{record['embedding_dim']}-d embeddings in a {dim}-d index")
            dim = record["embedding_dim"]
            entry = {k: record[k] for k in ("key", "rows", "embeddings_sha256", "rows_sha256")}
            fresh.header["embedding_dim"] = dim
            rows, _ = fresh._read_part(entry)
            overlap = known & set(rows["relative_path"])
            if overlap:
                raise GalleryIndexError(f"{self.location.location_of(PARTS)}/{record['key']}: holds image(s) the index "
                                        f"already has ({min(overlap)}, ...)")
            known |= set(rows["relative_path"])
            parts.append(entry)
            committed.add(record["key"])
            added += record["rows"]
        if added:
            fresh.header.update(parts=parts, count=sum(p["rows"] for p in parts), embedding_dim=dim,
                                updated=datetime.now(UTC).isoformat(timespec="seconds"))
            self.location.write_json(HEADER, fresh.header)
        self.header = fresh.header
        self._rows = self._embeddings = None
        self._searchers, self._cache = {}, {}
        return added

    def append(self, model: EmbeddingModel, items: list[Item], device: str = "cpu", batch_size: int = 32,
               shard_size: int = 256) -> tuple[int, list[ErrorRecord]]:
        """Embed and add the items the index does not hold yet (in-process); returns ``(added, errors)``."""
        self.check_model(model)
        missing, errors = self.missing_items(items)
        records = []
        for start in range(0, len(missing), shard_size):
            part, shard_errors = embed_gallery_shard(model, missing[start:start + shard_size], self.header["root"],
                                                     device, batch_size)
            errors.extend(shard_errors)
            records.append(self.write_part(part))
        return self.commit(records), errors

    # --- search -------------------------------------------------------------------------------
    def searcher(self, device: str = "auto") -> ExactSearch:
        """Exact search over this index (built once per device and kept)."""
        device = resolve_device(device)
        if device not in self._searchers:
            self._searchers[device] = ExactSearch(self.embeddings, self.similarity, device)
        return self._searchers[device]


def build_index(location: str | ResultsLocation, model: EmbeddingModel, items: list[Item], root: str | os.PathLike,
                similarity: str = "cosine", dataset: str | None = None, device: str = "cpu", batch_size: int = 32,
                shard_size: int = 256) -> tuple[GalleryIndex, int, list[ErrorRecord]]:
    """Create (or open) the index at ``location`` and append ``items``; returns ``(index, added, errors)``."""
    index = GalleryIndex.create(location, model, root, similarity, dataset)
    added, errors = index.append(model, items, device, batch_size, shard_size)
    return index, added, errors


# ---------------------------------------------------------------------------------------------
# search backends


def gallery_matrix(embeddings: np.ndarray | torch.Tensor, similarity: str = "cosine") -> torch.Tensor:
    """``E_hat = E / |E|`` row-wise (cosine; zero rows stay zero, so they score 0) or E itself (dot), float32."""
    matrix = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    matrix = matrix.float()
    if similarity == "dot":
        return matrix
    norms = matrix.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, matrix / norms.clamp_min(torch.finfo(matrix.dtype).tiny), torch.zeros_like(matrix))


class ExactSearch:
    """Exact ranking by ``scores = V @ E_hat.T``: one matrix-vector product per query vector.

    ``vectors`` are query-side vectors already divided by ``|E_q|`` (cosine; see
    :func:`eml_core.region_retrieval.query_vectors`), so scores are partial or
    overall similarities exactly. Top-k ties are broken by gallery index.
    """

    def __init__(self, embeddings: np.ndarray | torch.Tensor, similarity: str = "cosine", device: str = "cpu"):
        if similarity not in SIMILARITIES:
            raise ArgumentError("similarity", f"expected one of {SIMILARITIES}, got {similarity!r}")
        self.device = torch.device(resolve_device(device))
        self.matrix = gallery_matrix(embeddings, similarity).to(self.device)
        self.similarity = similarity

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def _vectors(self, vectors) -> torch.Tensor:
        v = torch.as_tensor(vectors, dtype=torch.float32)
        if v.dim() == 1:
            v = v.unsqueeze(0)
        if v.dim() != 2 or v.shape[1] != self.matrix.shape[1]:
            raise ArgumentError("vectors", f"expected (Q, {self.matrix.shape[1]}) query vectors, got {tuple(v.shape)}")
        return v.to(self.device)

    def scores(self, vectors) -> torch.Tensor:
        """``(Q, G)`` similarities to every gallery image, on the search device."""
        v = self._vectors(vectors)
        if v.shape[0] == 1:
            return torch.mv(self.matrix, v[0]).unsqueeze(0)
        return v @ self.matrix.T

    def search(self, vectors, k: int, exclude: list[set[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, indices)``, each ``(Q, k')`` with k' = min(k, G); ``exclude[q]`` are gallery indices
        never returned for query q (e.g. the query image itself). Missing slots hold index -1 and score NaN."""
        if k < 1:
            raise ArgumentError("k", f"must be at least 1, got {k}")
        scores = self.scores(vectors)
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        take = min(k + extra, scores.shape[1])
        top_values, top_indices = torch.topk(scores, take, dim=1) if take else (scores[:, :0], scores[:, :0].long())
        values, indices = top_values.cpu().numpy(), top_indices.cpu().numpy()
        width = min(k, scores.shape[1])
        out_scores = np.full((len(values), width), np.nan, dtype=np.float64)
        out_indices = np.full((len(values), width), -1, dtype=np.int64)
        for q in range(len(values)):
            order = np.lexsort((indices[q], -values[q]))  # score descending, then gallery index
            keep = [i for i in order if not exclude or indices[q, i] not in exclude[q]][:width]
            out_scores[q, :len(keep)] = values[q, keep]
            out_indices[q, :len(keep)] = indices[q, keep]
        return out_scores, out_indices

    def rank(self, vectors) -> tuple[np.ndarray, np.ndarray]:
        """The whole ranking ``(scores, indices)``, each ``(Q, G)``, score descending then gallery index."""
        scores = self.scores(vectors)
        values, indices = torch.sort(scores, dim=1, descending=True, stable=True)
        return values.cpu().numpy().astype(np.float64), indices.cpu().numpy()


def _faiss():
    try:
        import faiss
    except ImportError:
        raise GalleryIndexError("the IVF search backend needs faiss (pip install faiss-cpu); exact search needs "
                                "nothing more") from None
    return faiss


class IVFSearch:
    """Approximate search: faiss IVF (inverted lists over k-means cells of the normalised gallery), inner product.

    ``nlist`` cells (default ``4 sqrt(G)``, at least 1), ``nprobe`` of them
    scanned per query. ``pq_bytes`` compresses each vector to that many bytes
    (IVF-PQ; must divide l), for galleries whose float vectors do not fit in
    memory; without it vectors are stored as they are (IVF-Flat). Training
    (spherical k-means, seeded) uses at most ``train_size`` vectors.
    """

    def __init__(self, embeddings: np.ndarray, similarity: str = "cosine", nlist: int | None = None,
                 nprobe: int = 8, pq_bytes: int | None = None, train_size: int = 100_000, seed: int = 0):
        matrix = gallery_matrix(embeddings, similarity).numpy()
        self._build(matrix.shape[1], len(matrix), nlist, nprobe, pq_bytes, similarity)
        self.train(matrix, train_size, seed)
        self.add(matrix)

    @classmethod
    def from_index(cls, index: GalleryIndex, nlist: int | None = None, nprobe: int = 8, pq_bytes: int | None = None,
                   train_size: int = 100_000, seed: int = 0) -> IVFSearch:
        """Build from an index part by part (only one part's float vectors in memory at a time)."""
        self = cls.__new__(cls)
        self._build(index.header["embedding_dim"], len(index), nlist, nprobe, pq_bytes, index.similarity)
        sample, rng = [], np.random.default_rng(seed)
        share = min(1.0, train_size / max(len(index), 1))
        for _, embeddings in index.iter_parts():
            matrix = gallery_matrix(embeddings, index.similarity).numpy()
            sample.append(matrix[rng.random(len(matrix)) < share])
        self.train(np.concatenate(sample), train_size, seed)
        for _, embeddings in index.iter_parts():
            self.add(gallery_matrix(embeddings, index.similarity).numpy())
        return self

    def _build(self, dim: int, count: int, nlist, nprobe, pq_bytes, similarity) -> None:
        faiss = _faiss()
        self.nlist = int(nlist or max(1, round(4 * count ** 0.5)))
        self.similarity = similarity
        quantizer = faiss.IndexFlatIP(dim)
        if pq_bytes:
            if dim % pq_bytes:
                raise ArgumentError("pq_bytes", f"must divide the embedding size {dim}, got {pq_bytes}")
            self.index = faiss.IndexIVFPQ(quantizer, dim, self.nlist, pq_bytes, 8, faiss.METRIC_INNER_PRODUCT)
        else:
            self.index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.spherical = similarity == "cosine"
        self._quantizer = quantizer  # faiss does not own it from Python: keep it alive
        self.index.nprobe = min(nprobe, self.nlist)

    def train(self, matrix: np.ndarray, train_size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        if len(matrix) > train_size:
            matrix = matrix[np.sort(rng.choice(len(matrix), train_size, replace=False))]
        if len(matrix) < self.nlist:
            raise ArgumentError("nlist", f"{self.nlist} cells need at least as many training vectors, "
                                         f"got {len(matrix)}")
        self.index.cp.seed = seed
        self.index.train(np.ascontiguousarray(matrix, dtype=np.float32))

    def add(self, matrix: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(matrix, dtype=np.float32))

    @property
    def nprobe(self) -> int:
        return int(self.index.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.index.nprobe = max(1, min(int(value), self.nlist))

    def search(self, vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` ``(scores, indices)``; slots faiss could not fill hold index -1 and score NaN."""
        v = np.ascontiguousarray(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        scores, indices = self.index.search(v, k)
        scores = scores.astype(np.float64)
        scores[indices < 0] = np.nan
        return scores, indices.astype(np.int64)


def recall_against_exact(approximate: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Recall@k of an approximate search: the share of the exact top-k (per query) it also returns in its top-k."""
    approximate, exact = np.asarray(approximate)[:, :k], np.asarray(exact)[:, :k]
    found = sum(len(set(a[a >= 0]) & set(e[e >= 0])) for a, e in zip(approximate, exact, strict=True))
    total = sum(int((e >= 0).sum()) for e in exact)
    return found / total if total else float("nan")
