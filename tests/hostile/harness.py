"""Bookkeeping for the hostile-input and fault suites (issue 7's "measure and report").

Every hostile case goes through :func:`record` with the entry point it attacks and how it ended:

* ``clean_error``  - a one-line error naming the file or argument (exit status 2 on the CLI);
* ``errors_row``   - the run completed and recorded the bad input in its ``errors`` table;
* ``handled``      - refused or ignored by design (e.g. a 403 from the lab server, a lock that serialised writers);
* ``survived``     - an injected fault (kill -9, S3 5xx/throttling) after which the run ended with the same tables
                     as a clean run;
* ``traceback``    - an uncaught exception escaped the entry point (the case's test fails);
* ``data_lost``    - rows or files that should exist were missing afterwards (the case's test fails).

At the end of the session the counts per entry point are printed; with ``EML_HOSTILE_REPORT=PATH`` they are
also written to PATH as JSON. The counts are what the suite *ran*: nothing is counted that did not execute.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass

OUTCOMES = ("clean_error", "errors_row", "handled", "survived", "traceback", "data_lost")
GOOD = {"clean_error", "errors_row", "handled", "survived"}

_records: list[dict] = []


def record(entry_point: str, case: str, outcome: str, kind: str = "hostile_input") -> None:
    """Note one executed case. ``kind`` is ``hostile_input`` or ``fault``."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
    _records.append({"entry_point": entry_point, "case": case, "outcome": outcome, "kind": kind})


def records() -> list[dict]:
    return list(_records)


def summary() -> dict[str, dict[str, int]]:
    """``{entry point: {"tried": n, outcome: n, ...}}`` with hostile inputs and faults counted apart."""
    table: dict[str, Counter] = defaultdict(Counter)
    for r in _records:
        key = f"{r['entry_point']} ({'faults' if r['kind'] == 'fault' else 'hostile inputs'})"
        table[key]["tried"] += 1
        table[key][r["outcome"]] += 1
    return {k: dict(v) for k, v in sorted(table.items())}


def write_report() -> str:
    lines = ["hostile-input and fault suite: cases by entry point",
             f"{'entry point':58} {'tried':>6} {'clean':>6} {'errrow':>6} {'handled':>7} {'survived':>8} "
             f"{'traceback':>9} {'lost':>5}"]
    for key, counts in summary().items():
        lines.append(f"{key:58} {counts.get('tried', 0):6d} {counts.get('clean_error', 0):6d} "
                     f"{counts.get('errors_row', 0):6d} {counts.get('handled', 0):7d} {counts.get('survived', 0):8d} "
                     f"{counts.get('traceback', 0):9d} {counts.get('data_lost', 0):5d}")
    path = os.environ.get("EML_HOSTILE_REPORT")
    if path:
        with open(path, "w") as handle:
            json.dump({"summary": summary(), "cases": _records}, handle, indent=2)
    return "\n".join(lines)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(argv: list[str], entry_point: str | None = None, case: str | None = None,
            expect: str = "clean_error") -> CliResult:
    """Run ``eml ARGV`` in-process and classify it.

    ``expect="clean_error"``: exit status 2 and exactly one line on stderr, no traceback.
    ``expect="ok"``: exit status 0 (the caller then checks the errors table and records ``errors_row``).
    An exception escaping ``main`` is recorded as ``traceback`` and re-raised, failing the test.
    """
    from flows.cli import main

    entry = entry_point or f"eml {argv[0]}"
    name = case or " ".join(argv[1:])[:120]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse/click exit for usage errors
                code = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException:
        record(entry, name, "traceback")
        raise
    result = CliResult(code, out.getvalue(), err.getvalue())
    if expect == "clean_error":
        lines = [line for line in result.err.splitlines() if line.strip()]
        clean = code == 2 and "Traceback" not in result.err and len(lines) >= 1 and _one_message(lines)
        record(entry, name, "clean_error" if clean else "traceback")
        assert clean, f"eml {' '.join(argv)}: expected one error line and exit 2, got {code}:\n{result.err}"
    return result


def _one_message(lines: list[str]) -> bool:
    """One error line; a usage line printed by the argument parser before it is allowed."""
    errors = [line for line in lines if not line.startswith(("usage:", "  ", "Try ", "Usage:"))]
    return len(errors) == 1
