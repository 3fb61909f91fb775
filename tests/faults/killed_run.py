"""Run the localization flow and SIGKILL this very process at a chosen results write (fault tests only).

    python -m tests.faults.killed_run DATASET_ROOT OUT KILL_AT PHASE

Every file a run writes goes through ``eml_core.results.write_bytes_atomic``; this script wraps it, numbering the
writes from 1, and at write ``KILL_AT`` kills the process with SIGKILL (no cleanup, no atexit, as ``kill -9``):

* ``after``: once the file is complete and renamed into place;
* ``before-rename``: with the file's temporary copy written and fsynced, just before the rename.

It writes ``write N PATH`` to stdout as each write starts, so the test can check where the kill landed. The hook
lives here, in the test tree: product code has none.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import eml_core.atomic
import eml_core.results


def _say(line: str) -> None:
    """Straight to file descriptor 1: unbuffered, and past Prefect's ``log_prints``, which captures print()."""
    os.write(1, f"{line}\n".encode())


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _OsWhoseRenameKills:
    """What ``eml_core.atomic`` sees as ``os`` for the fatal write: everything real but ``replace``."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(source, target):
        _kill()


def main(dataset_root: str, out: str, kill_at: int, phase: str) -> None:
    if phase not in ("after", "before-rename"):
        raise SystemExit(f"phase: expected 'after' or 'before-rename', got {phase!r}")
    real_write = eml_core.results.write_bytes_atomic
    lock = threading.Lock()
    count = 0

    def write(path, data):
        nonlocal count
        with lock:
            count += 1
            number = count
        _say(f"write {number} {path}")
        if number != kill_at:
            return real_write(path, data)
        if phase == "before-rename":
            eml_core.atomic.os = _OsWhoseRenameKills()
        real_write(path, data)
        _kill()

    eml_core.results.write_bytes_atomic = write
    from flows.evaluate_localization import evaluate_localization
    from tasks.configs import LocalizationConfig

    evaluate_localization(LocalizationConfig(dataset=f"cub:{dataset_root}", model="tests.conftest:tiny", out=out,
                                             shard_size=4))
    _say(f"finished after {count} writes without being killed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
