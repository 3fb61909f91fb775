"""kill -9 at a seeded point of the localization flow, then a rerun: the tables are those of a clean run.

The flow runs in a subprocess that SIGKILLs itself at its N-th results write (``tests.faults.killed_run``), N drawn
by a seeded generator from the seed's third of the clean run's writes (so the seeds land in the embedding,
localization and summary steps alike), either just after that write or just before its rename. The
rerun, in this process, must skip exactly the shards that were finished and end with the clean run's six tables.
One seed also damages cached shard files between the kill and the rerun, as a power loss without fsync would
(a zero-byte file, a truncated one, garbage).
"""

from __future__ import annotations

import random
import re
import signal
from pathlib import Path

import pytest

from eml_core.results import ResultsLocation, resolve_run
from tests.faults.runs import assert_same_tables, run_flow, run_killed, tables
from tests.hostile.harness import record

SEEDS = (0, 1, 2)
DAMAGING_SEED = 1  # by its third of the writes, every embed shard and some localization files are on disk


def _shards(manifest: dict) -> dict[str, list[str]]:
    """The files that finish each shard: ``embed-i`` -> its .npz; ``localize-i`` -> its method files."""
    shards: dict[str, list[str]] = {}
    for path in manifest["shards"]["embed"] + manifest["shards"]["localize"]:
        shards.setdefault(_shard_of(path), []).append(path)
    return shards


RUN_FOLDER = re.compile(r"localization/\d{8}T\d{12}Z-[0-9a-f]{4}/")


def same_write(one: str, other: str) -> bool:
    """Equal relative paths once each run folder's id is set aside."""
    return RUN_FOLDER.sub("localization/RUN/", one) == RUN_FOLDER.sub("localization/RUN/", other)


def _shard_of(path: str) -> str:
    index = re.search(r"-(\d{4})-", path)[1]
    return f"{'embed' if 'embed' in path else 'localize'}-{index}"


def _damage(cache, rng: random.Random) -> dict[str, str]:
    """Zero-byte a localize method file, truncate an embeddings file, overwrite an embed errors file (paths under
    the shard cache)."""
    done = ResultsLocation(str(cache)).list("shards")
    targets = {
        "zero-byte": rng.choice([p for p in done if p.startswith("shards/localization/")]),
        "truncated": rng.choice([p for p in done if p.endswith(".npz")]),
        "garbage": rng.choice([p for p in done if p.startswith("shards/errors/embed-")]),
    }
    for damage, path in targets.items():
        data = (cache / path).read_bytes()
        (cache / path).write_bytes({"zero-byte": b"", "truncated": data[:len(data) // 3],
                                  "garbage": rng.randbytes(len(data))}[damage])
    return targets


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_9_then_rerun_ends_with_the_clean_tables(seed, clean_localization, prefect_harness,
                                                      tiny_synthetic_root, tmp_path):
    from prefect.settings import PREFECT_API_URL

    clean = clean_localization
    total = len(clean.writes)
    rng = random.Random(seed)
    kill_at = rng.randint(1 + seed * total // len(SEEDS), (seed + 1) * total // len(SEEDS))
    phase = rng.choice(["after", "before-rename"])
    out = tmp_path / "run"

    killed = run_killed(tiny_synthetic_root, out, kill_at, phase, PREFECT_API_URL.value(), tmp_path / "prefect")
    assert killed.returncode == -signal.SIGKILL, killed.output
    assert len(killed.writes) == kill_at, killed.output
    fatal = clean.writes[kill_at - 1]
    written = Path(killed.writes[-1])
    # the same writes in the same order as the clean run (the run folder's name is the run's own id)
    assert same_write(str(written.relative_to(out)), fatal), (written, fatal)
    assert written.is_file() == (phase == "after")
    if phase == "before-rename":  # the temporary copy is all there is, and the rerun must ignore it
        assert list(written.parent.glob(f".{written.name}.*.part"))

    cache = out / "localization"  # the shard cache, shared by the runs
    shards = _shards(clean.manifest)
    unfinished = {shard for shard, paths in shards.items() if not all((cache / p).is_file() for p in paths)}
    damaged = _damage(cache, rng) if seed == DAMAGING_SEED else {}
    store = ResultsLocation(str(cache))

    run_flow(tiny_synthetic_root, out)
    manifest = resolve_run(str(out), "localization").read_json("manifest.json")
    recomputed = unfinished | {_shard_of(p) for p in damaged.values()}
    assert manifest["shards_computed_this_run"] == len(recomputed), (unfinished, damaged)
    assert_same_tables(tables(out), clean.tables, repaired={store.location_of(p) for p in damaged.values()})

    where = f"{phase} write {kill_at}/{total} ({fatal})"
    record("localization flow", f"kill -9 {where}, seed {seed}", "survived", kind="fault")
    for damage, path in damaged.items():
        record("localization flow", f"{damage} cached shard {path} after kill -9 {where}, seed {seed}", "survived",
               kind="fault")
