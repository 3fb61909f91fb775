"""Damaged cached shard files are recomputed, overwritten and reported, never trusted (no Prefect needed).

Each case damages one file of a finished shard the way a power loss, a full disk or a stray edit would, reruns
the shard task, and checks the file now holds exactly what a clean computation wrote, the undamaged files were
left alone, and the shard's errors file carries one warning naming the damaged file.
"""

from __future__ import annotations

import io
import random
import shutil

import numpy as np
import pandas as pd
import pytest

from eml_core.errors import ArgumentError
from eml_core.results import ResultsLocation
from eml_core.tables import frame
from tasks.configs import LocalizationConfig
from tasks.localization import embed_shard, localize_shard, make_pairs, read_embeddings
from tests.hostile.harness import record

TINY = "tests.conftest:tiny"


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _parquet_of_another_table() -> bytes:
    buffer = io.BytesIO()
    frame("retrieval_metrics", []).to_parquet(buffer)
    return buffer.getvalue()


DAMAGE = {
    "zero-byte": lambda data: b"",
    "truncated": lambda data: data[:len(data) // 2],
    "garbage": lambda data: random.Random(len(data)).randbytes(len(data)),
    "flipped bytes inside": lambda data: data[:100] + bytes(b ^ 0x5A for b in data[100:110]) + data[110:],
    "other table's schema": lambda data: _parquet_of_another_table(),
    "npz without embeddings": lambda data: _npz(image_ids=np.array(["1"])),
    "npz of inconsistent lengths": lambda data: _npz(image_ids=np.array(["1", "2"]),
                                                     embeddings=np.zeros((3, 5), np.float32)),
    "maps of the wrong shape": lambda data: _npz(image_ids=np.array(["1"]), map_00000=np.zeros((3, 5), np.float32)),
}


@pytest.fixture(scope="module")
def finished_shards(tiny_synthetic, tmp_path_factory):
    """One finished embed shard and one finished localize shard, computed once; each test works on a copy."""
    out = tmp_path_factory.mktemp("shards") / "run"
    items = tiny_synthetic.items[:4]
    config = LocalizationConfig(model=TINY, out=str(out), methods=("gradcam", "decomposition"), device="cpu",
                                thresholds=(0.2, 0.5))
    embedded = _embed(out, items, config)
    pairs, _ = make_pairs.fn(items, read_embeddings(str(out), [embedded["path"]]), "nearest", 0,
                              ("train", "test"))
    localized = _localize(out, pairs, config, embedded)
    assert embedded["computed"] and localized["computed"] == ["gradcam", "decomposition"]
    assert config.feature_map_cache != "none" and embedded["feature_maps_path"]  # localized from the kept maps
    return out, items, pairs, config, embedded, localized


def _embed(out, items, config):
    return embed_shard.fn(str(out), TINY, items, 0, "cpu", feature_maps=config.feature_map_cache)


def _localize(out, pairs, config, embedded):
    return localize_shard.fn(str(out), TINY, pairs, 0, config, [embedded["feature_maps_path"]])


def _copy(finished_shards, tmp_path):
    out, items, pairs, config, embedded, localized = finished_shards
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    config = LocalizationConfig(**{**config.to_dict(), "out": str(copy)})
    return copy, items, pairs, config, embedded, localized


CASES = [  # (which file, damage, words expected in the warning)
    ("embeddings", "zero-byte", "(empty file, 0 bytes)"),
    ("embeddings", "truncated", "BadZipFile"),
    ("embeddings", "garbage", "not an .npz archive (no zip signature)"),
    ("embeddings", "flipped bytes inside", "Bad CRC-32"),
    ("embeddings", "npz without embeddings", "KeyError"),
    ("embeddings", "npz of inconsistent lengths", "(2 image ids for 3 embeddings)"),
    ("embed errors", "zero-byte", "(empty file, 0 bytes)"),
    ("feature maps", "zero-byte", "(empty file, 0 bytes)"),
    ("feature maps", "truncated", "BadZipFile"),
    ("feature maps", "garbage", "not an .npz archive (no zip signature)"),
    ("feature maps", "flipped bytes inside", "Bad CRC-32"),
    ("feature maps", "npz without embeddings", "0 arrays besides image_ids"),
    ("feature maps", "npz of inconsistent lengths", "1 arrays besides image_ids of shape (2,)"),
    ("feature maps", "maps of the wrong shape", "map_00000 is (3, 5) float32"),
    ("localization", "zero-byte", "(empty file, 0 bytes)"),
    ("localization", "truncated", "Parquet magic bytes not found"),
    ("localization", "garbage", "Parquet magic bytes not found"),
    ("localization", "flipped bytes inside", "rror"),
    ("localization", "other table's schema", "are not those of the localization_items table"),
    ("localize errors", "truncated", "Parquet magic bytes not found"),
]


@pytest.mark.parametrize("target, damage, words", CASES, ids=[f"{t}-{d}" for t, d, _ in CASES])
def test_a_damaged_cached_file_is_recomputed_overwritten_and_reported(finished_shards, tmp_path, target, damage,
                                                                      words):
    out, items, pairs, config, embedded, localized = _copy(finished_shards, tmp_path)
    store = ResultsLocation(str(out))
    relative = {"embeddings": embedded["path"], "embed errors": embedded["errors_path"],
                "feature maps": embedded["feature_maps_path"], "localization": localized["paths"]["decomposition"],
                "localize errors": localized["errors_path"]}[target]
    clean = store.read_bytes(relative)
    (out / relative).write_bytes(DAMAGE[damage](clean))
    untouched = {p: (out / p).stat().st_mtime_ns for p in store.list("shards") if p != relative}

    if target.startswith(("embed", "feature")):
        result = _embed(out, items, config)
        assert result["computed"] is True
        errors_path = result["errors_path"]
        for written, arrays in ((result["path"], ("image_ids", "embeddings")),
                                (result["feature_maps_path"], ("image_ids", "map_00000", "map_00003"))):
            with np.load(io.BytesIO(store.read_bytes(written))) as now, np.load(io.BytesIO(
                    (finished_shards[0] / written).read_bytes())) as before:
                assert sorted(now.files) == sorted(before.files)
                for name in arrays:
                    np.testing.assert_array_equal(now[name], before[name])
    else:
        result = _localize(out, pairs, config, embedded)
        assert result["computed"] == ([] if target == "localize errors" else ["decomposition"])
        errors_path = result["errors_path"]
        for path in result["paths"].values():
            pd.testing.assert_frame_equal(store.read_table(path), ResultsLocation(str(finished_shards[0]))
                                          .read_table(path))
    # the rest was kept: all but the damaged file and the shard's errors file (which now carries the warning);
    # an embed shard is one computation, so its embeddings and feature maps are rewritten with its errors file;
    # a method's localization shard is written with its stored maps (localization_maps), so both are rewritten
    rewritten = {errors_path} | ({embedded["path"], embedded["feature_maps_path"]}
                                 if target.startswith(("embed", "feature")) else set())
    if target == "localization":
        rewritten |= {result["maps_paths"][method] for method in result["computed"]}
    kept = set(untouched) - rewritten
    assert len(kept) == len(untouched) - len(rewritten - {relative})
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == {p: untouched[p] for p in kept}

    errors = store.read_table(errors_path)
    warnings = errors[errors["severity"] == "warning"]
    assert list(warnings["file"]) == [store.location_of(relative)]
    problem = warnings["problem"].iloc[0]
    assert problem.startswith("cached shard unreadable (") and problem.endswith("): recomputed"), problem
    assert words in problem, problem
    assert len(errors) - len(warnings) == len(ResultsLocation(str(finished_shards[0])).read_table(errors_path))

    # the repaired shard is cached again, and its warning stays on record with it
    again = (_embed(out, items, config) if target.startswith(("embed", "feature"))
             else _localize(out, pairs, config, embedded))
    assert again["computed"] in (False, [])
    assert store.read_table(errors_path).equals(errors)
    record("localization shard tasks", f"cached {target} file damaged: {damage}", "survived", kind="fault")


def test_a_read_failure_is_not_mistaken_for_damage(finished_shards, tmp_path, monkeypatch):
    """Only bytes that do not decode count as damaged; an I/O error fails the task instead of recomputing."""
    out, items, *_ = _copy(finished_shards, tmp_path)

    def unreadable(self, relative):
        raise PermissionError(f"{relative}: permission denied")

    monkeypatch.setattr(ResultsLocation, "read_bytes", unreadable)
    with pytest.raises(PermissionError, match="permission denied"):
        embed_shard.fn(str(out), TINY, items, 0, "cpu")


def test_localizing_from_kept_maps_needs_the_maps_files(finished_shards, tmp_path):
    out, _, pairs, config, *_ = _copy(finished_shards, tmp_path)
    with pytest.raises(ArgumentError) as refused:
        localize_shard.fn(str(out), TINY, pairs, 0, config)  # the maps files not given
    assert refused.value.argument == "feature_map_files" and "\n" not in str(refused.value)
