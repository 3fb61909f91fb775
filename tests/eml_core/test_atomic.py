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
