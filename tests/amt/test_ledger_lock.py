"""One study lock and one read-modify-write API for the ledger, tested with real concurrent processes."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from amt.ledger import Ledger, study_lock
from tests.amt.helpers import make_ledger

HELD, EARLIER = "ASSIGN-HELD", "ASSIGN-EARLIER"


# --- what the child processes run (module-level: spawned children import this module) ----------------
def _collect_slowly(folder: str, signal: str, finished: str) -> None:
    from amt.collect import collect
    from tests.amt.helpers import FakeMTurk, answer_xml

    ledger = Ledger.load(folder)
    fake = FakeMTurk(slow_listing=1.5, signal=Path(signal))
    hit = ledger.hits[0]
    fake.assignments[hit["hit_id"]] = [{"AssignmentId": HELD, "WorkerId": "WORKER1", "HITId": hit["hit_id"],
                                        "AssignmentStatus": "Submitted", "Answer": answer_xml({"q0": "maybe"})}]
    collect(fake, folder, log=lambda *_: None)
    Path(finished).write_text(repr(time.time()))


def _reject(folder: str, times: str) -> None:
    from amt.collect import reject
    from tests.amt.helpers import FakeMTurk

    called = time.time()
    reject(FakeMTurk(), folder, EARLIER, "Failed the attention checks.")
    Path(times).write_text(json.dumps([called, time.time()]))


def _add_tokens(folder: str, barrier, rounds: int, per_round: int) -> None:
    from amt.lab import LabServer

    server = LabServer(folder)  # a real lab server process (bound to 127.0.0.1, never started)
    try:
        barrier.wait()
        for _ in range(rounds):
            server.add_participants(per_round)
    finally:
        server.stop()


def _context():
    """Children forked from a fresh single-threaded server that imported the study code once (fast and
    fork-safe: never a fork of the multi-threaded test process)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.amt.test_ledger_lock", "amt.collect", "amt.lab"])
    return context


def _spawn(target, *args):
    process = _context().Process(target=target, args=args)
    process.start()
    return process


def _join(*processes, timeout=120):
    for process in processes:
        process.join(timeout)
        assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"


# --- tests ----------------------------------------------------------------------------------------
def test_a_reject_during_a_collect_is_not_lost(tmp_path):
    folder = make_ledger(tmp_path / "study")
    with Ledger.update(folder) as ledger:
        ledger.hits[0].update(hit_id="HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA", status="launched")
        ledger.hits[1].update(hit_id="HIT1AAAAAAAAAAAAAAAAAAAAAAAAAA", status="launched")
        ledger.data["launches"] = [{"live": False, "hit_type_id": "HITTYPE1", "participated_qualification": "QP1"}]
        ledger.data["review"] = {EARLIER: {"hit_id": "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA", "reason": "1 of 1 failed"}}
    signal, finished, times = tmp_path / "collecting", tmp_path / "collect-finished", tmp_path / "reject-times"
    collector = _spawn(_collect_slowly, str(folder), str(signal), str(finished))
    deadline = time.time() + 60
    while not signal.exists():  # the collect has read the ledger and is talking to "MTurk"
        assert time.time() < deadline and collector.is_alive(), "the collect never started"
        time.sleep(0.05)
    rejecter = _spawn(_reject, str(folder), str(times))
    _join(collector, rejecter)
    called, done = json.loads(times.read_text())
    collect_done = float(finished.read_text())
    assert called < collect_done < done  # the reject was typed during the collect, and waited for it
    ledger = Ledger.load(folder)
    assert ledger.data["rejected"] == {EARLIER: "Failed the attention checks."}  # the reject's update survived
    assert set(ledger.data["review"]) == {HELD}  # the collect's own update too (EARLIER left review)
    assert len(ledger.data["qualified_workers"]) == 1


def test_concurrent_lab_servers_never_lose_a_participant_token(tmp_path):
    folder = make_ledger(tmp_path / "study")
    processes, rounds, per_round = 4, 5, 3
    barrier = _context().Barrier(processes)
    _join(*[_spawn(_add_tokens, str(folder), barrier, rounds, per_round) for _ in range(processes)])
    tokens = Ledger.load(folder).data["lab_tokens"]
    assert len(tokens) == len(set(tokens)) == processes * rounds * per_round


def test_saving_without_the_lock_is_refused(tmp_path):
    folder = make_ledger(tmp_path / "study")
    ledger = Ledger.load(folder)
    ledger.data["lab_tokens"] = ["x" * 20]
    with pytest.raises(RuntimeError, match="saved without the study lock; use Ledger.update"):
        ledger.save()
    assert "lab_tokens" not in Ledger.load(folder).data


def test_nested_updates_share_one_ledger_and_a_failed_block_saves_nothing(tmp_path):
    folder = make_ledger(tmp_path / "study")
    with Ledger.update(folder) as outer:
        outer.data["lab_tokens"] = ["a" * 20]
        with Ledger.update(folder) as inner:  # e.g. the upload inside a launch
            assert inner is outer
            inner.data["lab_tokens"].append("b" * 20)
        with study_lock(folder):  # re-entrant: no deadlock
            pass
    assert Ledger.load(folder).data["lab_tokens"] == ["a" * 20, "b" * 20]
    with pytest.raises(ZeroDivisionError):
        with Ledger.update(folder) as ledger:
            ledger.data["lab_tokens"].append("c" * 20)
            raise ZeroDivisionError("a step failed half-way")
    assert Ledger.load(folder).data["lab_tokens"] == ["a" * 20, "b" * 20]


def test_the_lock_serialises_threads_of_one_process(tmp_path):
    """The lab server answers in threads: each thread's flock is its own, so they exclude each other too."""
    import threading

    folder = make_ledger(tmp_path / "study")
    inside, overlaps = [], []

    def work():
        for _ in range(5):
            with study_lock(folder):
                if inside:
                    overlaps.append(1)
                inside.append(1)
                time.sleep(0.005)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not overlaps
