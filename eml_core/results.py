"""Results I/O: one place where every run's files are read and written, on a local folder or on S3.

A :class:`ResultsLocation` is a local folder or ``s3://bucket/prefix``; the
evaluation tasks, the study tooling (which reads a localization run to build a
study) and the review dashboard all go through it, so a run stored on S3 is
readable everywhere a local one is.

**Why pyarrow.fs.** It ships with pyarrow (already needed for Parquet), reads
and writes Parquet natively, and brings no Python AWS stack of its own: the
fsspec route (s3fs) pins aiobotocore, whose botocore pin (1.43) conflicts with the
boto3 1.44 that the MTurk gateway needs, so the two cannot be installed together
here. Its S3 client retries transient errors (throttling, 5xx) with the AWS SDK's
standard strategy (``EML_S3_MAX_ATTEMPTS``, default 10).

**Atomic writes.** Locally a temporary file is fsynced and renamed into place
(:mod:`eml_core.atomic`); on S3 an object only appears when its upload
completes, so a reader sees the old object or the whole new one, never half.

**Where S3 is.** Credentials come from the AWS default chain (environment,
profile, instance role). ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` points
at another endpoint (a local S3 server), ``AWS_REGION``/``AWS_DEFAULT_REGION``
sets the region.

Tables are written and read with the fixed schemas of :mod:`eml_core.tables`.
"""

from __future__ import annotations

import io
import json
import os
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from eml_core.atomic import write_bytes_atomic
from eml_core.errors import ArgumentError, EmlError
from eml_core.tables import frame, to_arrow


class ResultsError(EmlError):
    """A results file is missing or unreadable; the message names it."""


@lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str | None, attempts: int) -> pafs.S3FileSystem:
    options: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)}
    if region:
        options["region"] = region
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    return pafs.S3FileSystem(**options)


def s3_filesystem() -> pafs.S3FileSystem:
    """The S3 filesystem configured from the environment (one per configuration, reused)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        attempts = max(1, int(os.environ.get("EML_S3_MAX_ATTEMPTS", "10")))
    except ValueError:
        attempts = 10
    return _s3_filesystem(endpoint, region, attempts)


class ResultsLocation:
    """A run's folder: local path or ``s3://bucket/prefix``. Paths given to methods are relative to it."""

    def __init__(self, uri: str | os.PathLike):
        self.uri = str(uri)
        if self.uri.startswith("s3://"):
            bucket, _, prefix = self.uri[len("s3://"):].partition("/")
            if not bucket:
                raise ArgumentError("results location", f"{self.uri!r}: no bucket name")
            self.bucket: str | None = bucket
            self.prefix = prefix.strip("/")
            self.root = Path(".")
        else:
            self.bucket, self.prefix = None, ""
            self.root = Path(self.uri)

    def __repr__(self) -> str:
        return f"ResultsLocation({self.uri!r})"

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def child(self, relative: str) -> "ResultsLocation":
        """The location of a sub-folder (e.g. one run of a series)."""
        return ResultsLocation(self.location_of(relative))

    def _s3_path(self, relative: str) -> str:
        key = str(PurePosixPath(self.prefix, relative)) if self.prefix else str(PurePosixPath(relative))
        return f"{self.bucket}/{key}".rstrip("/")

    def location_of(self, relative: str) -> str:
        """Full URI or path of a file in this location (for artifacts and manifests)."""
        if self.is_s3:
            return f"s3://{self._s3_path(relative)}" if relative else f"s3://{self._s3_path('')}"
        return str(self.root / relative) if relative else str(self.root)

    # --- bytes ---------------------------------------------------------------------------------
    def write_bytes(self, relative: str, data: bytes) -> str:
        if self.is_s3:
            with s3_filesystem().open_output_stream(self._s3_path(relative)) as stream:
                stream.write(data)
        else:
            write_bytes_atomic(self.root / relative, data)
        return self.location_of(relative)

    def read_bytes(self, relative: str) -> bytes:
        try:
            if self.is_s3:
                with s3_filesystem().open_input_stream(self._s3_path(relative)) as stream:
                    return stream.read()
            return (self.root / relative).read_bytes()
        except FileNotFoundError:
            raise ResultsError(f"{self.location_of(relative)}: no such file") from None
        except IsADirectoryError:
            raise ResultsError(f"{self.location_of(relative)}: is a folder, not a file") from None
        except OSError as error:
            if self.is_s3 and ("does not exist" in str(error) or "NoSuchKey" in str(error)):
                raise ResultsError(f"{self.location_of(relative)}: no such file") from None
            raise

    def exists(self, relative: str) -> bool:
        if self.is_s3:
            return s3_filesystem().get_file_info(self._s3_path(relative)).type == pafs.FileType.File
        return (self.root / relative).is_file()

    def list(self, folder: str = "") -> list[str]:
        """Relative paths of the files directly or indirectly under ``folder`` (sorted; hidden files skipped)."""
        if self.is_s3:
            base = self._s3_path("")
            selector = pafs.FileSelector(self._s3_path(folder), recursive=True, allow_not_found=True)
            names = [info.path[len(base) + 1:] for info in s3_filesystem().get_file_info(selector)
                     if info.type == pafs.FileType.File]
        else:
            start = self.root / folder
            names = [str(p.relative_to(self.root)) for p in start.rglob("*")] if start.is_dir() else []
            names = [n for n in names if (self.root / n).is_file()]
        return sorted(n for n in names if not PurePosixPath(n).name.startswith("."))

    # --- formats -------------------------------------------------------------------------------
    def write_table(self, relative: str, name: str, data) -> str:
        """Write Parquet with the fixed schema ``name`` (an unknown or missing column is an error).

        Every data page carries a CRC-32 (``write_page_checksum``), checked on reading: a flipped byte inside a
        page is an error, not a silently different number.
        """
        buffer = io.BytesIO()
        pq.write_table(to_arrow(name, data), buffer, write_page_checksum=True)
        return self.write_bytes(relative, buffer.getvalue())

    def read_table(self, relative: str, name: str | None = None) -> pd.DataFrame:
        """Read a Parquet table; with ``name``, checked against (and cast to) that schema."""
        try:
            table = pq.read_table(io.BytesIO(self.read_bytes(relative)), page_checksum_verification=True).to_pandas()
        except ResultsError:
            raise
        except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
            raise ResultsError(f"{self.location_of(relative)}: not a readable Parquet table ({error})") from None
        return frame(name, table, source=self.location_of(relative)) if name else table

    def write_json(self, relative: str, payload) -> str:
        return self.write_bytes(relative, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, relative: str):
        try:
            return json.loads(self.read_bytes(relative))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ResultsError(f"{self.location_of(relative)}: not valid JSON ({error})") from None


LATEST = "latest.json"  # in <root>/<kind>/: the newest finished run of that kind (tasks/runs.py keeps it)


def resolve_run(location: str, kind: str) -> ResultsLocation:
    """The run a location names: a run folder itself (it holds ``manifest.json``), a kind's folder
    (``<root>/<kind>``, its ``latest`` run), or a results root (``<root>``, its ``<kind>/latest`` run).
    Raises ResultsError naming what is missing."""
    store = ResultsLocation(location)
    if store.exists("manifest.json"):
        return store
    for folder, pointer_path in (("", LATEST), (kind, f"{kind}/{LATEST}")):
        if store.exists(pointer_path):
            try:
                pointer = store.read_json(pointer_path)
                run_id = pointer["run_id"]
            except (EmlError, KeyError, TypeError) as error:
                raise ResultsError(f"{store.location_of(pointer_path)}: unreadable pointer ({error})") from None
            if not isinstance(run_id, str) or "/" in run_id or ".." in run_id:
                raise ResultsError(f"{store.location_of(pointer_path)}: not a run id: {run_id!r}")
            return store.child(f"{folder}/{run_id}" if folder else run_id)
    raise ResultsError(f"{store.location_of('')}: neither a {kind} run (no manifest.json) nor a folder holding "
                       f"finished {kind} runs (no {LATEST} or {kind}/{LATEST})")
