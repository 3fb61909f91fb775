"""Atomic, durable file writes: a reader sees the old file or the whole new one, never half of it.

Atomic: the bytes go to a temporary file beside the target, which is then renamed over it (``os.replace`` is
atomic on POSIX and Windows). Durable: the temporary file is fsynced before the rename, so after a power loss
the new name never points at data still sitting in the page cache (ext4/xfs may otherwise persist the rename
before the data: a zero-byte or truncated file), and the directory is fsynced after it, so the rename itself
survives. A folder created on the way is not fsynced up to the root: losing it in a power loss loses whole
files, which a rerun recomputes as missing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it into place, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".part",
                                         delete=False) as handle:
            temporary = Path(handle.name)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(folder: Path) -> None:
    """Persist the folder's entries (the rename). POSIX only: Windows cannot open a folder for fsync."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
