"""A Dask worker plugin that SIGKILLs the worker it runs in, once, mid-way through a localization shard (fault
tests only: product code has no such hook).

Installed on a test's own cluster with ``client.register_plugin``, it wraps ``eml_core.results.write_bytes_atomic``
in every worker process. The first worker to finish writing a file under ``shards/localization/`` claims the
marker file (``O_EXCL``: exactly one claim, even across processes and restarts), writes its PID there and kills
itself with SIGKILL (no cleanup, as ``kill -9``), leaving its shard part-written. Dask then reschedules the shard
on a live worker, and the nanny starts a fresh worker process in place of the dead one.
"""

from __future__ import annotations

import os
import signal

from distributed.diagnostics.plugin import WorkerPlugin


class KillOnceAtLocalizationWrite(WorkerPlugin):
    name = "eml-test-kill-once"

    def __init__(self, marker: str):
        self.marker = marker

    def setup(self, worker) -> None:
        import eml_core.results

        real = eml_core.results.write_bytes_atomic
        marker = self.marker

        def write(path, data):
            written = real(path, data)
            if "/shards/localization/" in str(path).replace(os.sep, "/"):
                try:
                    claim = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return written
                os.write(claim, f"{os.getpid()} {path}".encode())
                os.close(claim)
                os.kill(os.getpid(), signal.SIGKILL)
            return written

        eml_core.results.write_bytes_atomic = write
