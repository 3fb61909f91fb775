"""Atomic writes leave the old file or the new one, and no temporary file behind."""

from __future__ import annotations

import os

import pytest

from eml_core.atomic import write_bytes_atomic


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "table.parquet"
    write_bytes_atomic(target, b"old")
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["table.parquet"]


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "ledger.json"
    write_bytes_atomic(target, b"old")

    def broken(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk gone"):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["ledger.json"]


def test_data_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    """Durability: the order of fsync(file), rename, fsync(folder), checked on the inodes fsync saw."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.fstat(fd).st_ino)) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace",)) or real_replace(a, b))
    target = tmp_path / "shard.parquet"
    write_bytes_atomic(target, b"payload")
    assert events == [("fsync", target.stat().st_ino), ("replace",), ("fsync", tmp_path.stat().st_ino)]


def test_failed_fsync_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "table.parquet"
    write_bytes_atomic(target, b"old")

    def broken(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="I/O error"):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["table.parquet"]
