"""Cached shard files are trusted only once they read back whole.

A rerun skips the shards whose files are in the results location. Writes are atomic and durable
(:mod:`eml_core.atomic`), yet a results folder can still hold a damaged file: one written without fsync before
a power loss (older versions, or a file system that ignores it), cut short by a full disk or an interrupted
copy, bit rot, or a stray edit. Trusting it would crash every rerun at the summary, or worse, feed it wrong
numbers. So each cached file is decoded before it is skipped:

* Parquet: every page decoded (page CRC-32s checked), with exactly its table's schema;
* embeddings ``.npz``: a zip archive (member CRCs checked) holding ``image_ids`` and ``embeddings`` arrays of
  consistent lengths.

A damaged file counts as missing: the shard recomputes it, overwrites it, and records a ``warning`` row naming
the file and the problem in the shard's errors file, hence in the run's ``errors`` table. A shard's errors file
holds the errors of its last computation, the repairs that computation made included.

Only decoding failures mark a file damaged; a failure to *read* it (S3 errors once the S3 client's retries are
spent, permissions) propagates and fails the task, as before.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eml_core.datasets import ErrorRecord
from eml_core.results import ResultsLocation
from eml_core.tables import SCHEMAS

EMBEDDINGS = "embeddings"  # the kind of a shard's ``.npz`` file; every other kind is a table schema name

# What decoding damaged bytes raises: pyarrow (ArrowInvalid, ArrowIOError), numpy's loader (EOFError for an
# empty file, ValueError for a non-archive, which it would otherwise unpickle), zipfile (bad archive or CRC).
_DECODE_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def table_problem(data: bytes, schema_name: str) -> str | None:
    """Why ``data`` is not a whole Parquet table with schema ``schema_name`` (None if it is)."""
    # decodes every page, checking the pages' CRC-32 where the writer stored them (ResultsLocation does)
    schema = pq.read_table(io.BytesIO(data), page_checksum_verification=True).schema.remove_metadata()
    if not schema.equals(SCHEMAS[schema_name]):
        return f"columns {schema.names} are not those of the {schema_name} table"
    return None


def embeddings_problem(data: bytes) -> str | None:
    """Why ``data`` is not a shard's embeddings archive (None if it is)."""
    if not data.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # else np.load would take it for a pickle
        return "not an .npz archive (no zip signature)"
    archive = np.load(io.BytesIO(data))  # allow_pickle=False: nothing in the file runs
    if not isinstance(archive, np.lib.npyio.NpzFile):
        return "a single array, not an .npz archive"
    with archive:
        image_ids, embeddings = archive["image_ids"], archive["embeddings"]  # reads and CRC-checks both
    if image_ids.ndim != 1 or embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
        return f"arrays of shapes {image_ids.shape} and {embeddings.shape} {embeddings.dtype}"
    if len(image_ids) != len(embeddings):
        return f"{len(image_ids)} image ids for {len(embeddings)} embeddings"
    return None


def shard_file_problem(data: bytes, kind: str) -> str | None:
    """Why the bytes of a cached shard file of ``kind`` cannot be used, in a few words (None if they can)."""
    if not data:
        return "empty file, 0 bytes"
    try:
        return embeddings_problem(data) if kind == EMBEDDINGS else table_problem(data, kind)
    except _DECODE_ERRORS as error:
        message = str(error).replace("Could not open Parquet input source '<Buffer>': ", "").splitlines()
        return f"{type(error).__name__}: {message[0][:200] if message else ''}".rstrip(": ")


@dataclass
class ShardCache:
    """The cached files of one shard task: which can be skipped, and the repairs to record as warnings."""

    store: ResultsLocation
    stage: str
    repairs: list[ErrorRecord] = field(default_factory=list)

    def usable(self, relative: str, kind: str) -> bool:
        """True if the file exists and decodes as ``kind``; False if it must be (re)computed."""
        if not self.store.exists(relative):
            return False
        problem = shard_file_problem(self.store.read_bytes(relative), kind)
        if problem is None:
            return True
        self.repairs.append(ErrorRecord(self.stage, None, self.store.location_of(relative), None,
                                        f"cached shard unreadable ({problem}): recomputed", "warning"))
        return False
