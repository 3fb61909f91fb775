"""One results location per run: a local folder or ``s3://bucket/prefix``.

Everything a run writes goes through :class:`ResultsLocation`: Parquet tables
with the schemas of :mod:`eml_core.tables`, JSON, PNG figures and shard files.
Writes are atomic: locally a temporary file is renamed into place; on S3 a
``PutObject`` is atomic by nature (a reader sees the old object or the whole new
one). The S3 endpoint follows boto3's own configuration (``AWS_ENDPOINT_URL``,
profiles, ...), so a local S3 server works without code changes.

Transient S3 failures — 503 SlowDown (throttling), 500 InternalError, 502/504,
timeouts — are retried by botocore with exponential backoff and jitter
(:data:`S3_RETRIES`: "standard" mode, 5 attempts in all). Set here rather than
left to botocore's defaults (3 attempts; "legacy" mode in older releases) so the
fault tolerance a run gets does not depend on the installed version. A fault
that outlasts the retries fails the task, and the flow; a rerun resumes from
the shards already written.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from eml_core.atomic import write_bytes_atomic
from eml_core.tables import to_arrow

S3_RETRIES = {"mode": "standard", "total_max_attempts": 5}


class ResultsLocation:
    def __init__(self, uri: str | os.PathLike):
        self.uri = str(uri)
        if self.uri.startswith("s3://"):
            bucket, _, prefix = self.uri[len("s3://"):].partition("/")
            if not bucket:
                raise ValueError(f"results location {self.uri!r}: no bucket name")
            self.bucket, self.prefix = bucket, prefix.strip("/")
            self._client = None
        else:
            self.bucket = None
            self.root = Path(self.uri)

    # --- backend -------------------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("s3", config=Config(retries=dict(S3_RETRIES)))
        return self._client

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def location_of(self, relative: str) -> str:
        """Full URI or path of a file in this location (for artifacts and manifests)."""
        return f"s3://{self.bucket}/{self._key(relative)}" if self.is_s3 else str(self.root / relative)

    def write_bytes(self, relative: str, data: bytes) -> str:
        if self.is_s3:
            self.client.put_object(Bucket=self.bucket, Key=self._key(relative), Body=data)
        else:
            write_bytes_atomic(self.root / relative, data)
        return self.location_of(relative)

    def read_bytes(self, relative: str) -> bytes:
        if self.is_s3:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(relative))["Body"].read()
        return (self.root / relative).read_bytes()

    def exists(self, relative: str) -> bool:
        if self.is_s3:
            from botocore.exceptions import ClientError

            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(relative))
                return True
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return (self.root / relative).is_file()

    def list(self, folder: str) -> list[str]:
        """Relative paths of the files directly or indirectly under ``folder``."""
        if self.is_s3:
            prefix = self._key(folder.rstrip("/") + "/")
            names = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for entry in page.get("Contents", []):
                    names.append(entry["Key"][len(self._key("")):])
            return sorted(names)
        base = self.root / folder
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))

    # --- formats -------------------------------------------------------------------------------
    def write_table(self, relative: str, name: str, data) -> str:
        """Write a Parquet table with the fixed schema ``name``.

        Every data page carries a CRC-32 (``write_page_checksum``), checked on reading: a flipped byte inside a
        page is an error, not a silently different number.
        """
        buffer = io.BytesIO()
        pq.write_table(to_arrow(name, data), buffer, write_page_checksum=True)
        return self.write_bytes(relative, buffer.getvalue())

    def read_table(self, relative: str) -> pd.DataFrame:
        return pq.read_table(io.BytesIO(self.read_bytes(relative)), page_checksum_verification=True).to_pandas()

    def write_json(self, relative: str, payload) -> str:
        return self.write_bytes(relative, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, relative: str):
        return json.loads(self.read_bytes(relative))
