"""Every command the README and the docs show is run by this test exactly as written.

A documented example that fails is a bug (one retrieval study shipped that way). The commands are read from the
``bash`` blocks of README.md and docs/*.md, in that order, continuation lines joined:

* a **concrete** command (no placeholder) runs as written with ``bash -c`` in a workspace that looks like a fresh
  checkout (this repository's ``.venv``, ``data/``, Makefile and project files, ``../shared`` beside it), in the
  documents' order, so later commands see what earlier ones wrote (``make demo`` writes ``out/demo``, which the
  study commands read); it must exit 0; a command shown in two documents runs once, where it first appears.
  ``make demo`` runs alone first; after it, two commands may run at once (``EML_DOCS_LANES``, default 2; 1 runs
  them one by one) unless they touch the same files (:func:`_conflict`): a command starts only when no running
  command writes what it reads or reads or writes what it writes, so each still sees what the documents say;
* a **template** (a placeholder such as ``PATH`` or ``ASSIGNMENT_ID``, an optional ``[--flag]`` or a choice
  ``a|b``) cannot run as written, so every ``eml`` command, subcommand and option it names is checked against the
  command line itself;
* commands that need what a test cannot have here are listed in ``NOT_RUN`` with the reason (running the test
  suite from inside the test suite; MTurk, which is not reachable);
* the **measurements** of docs/benchmarks.md (minutes to hours on the full sample data, run when the numbers
  are taken) are checked like templates: the benchmark scripts exist and accept every option shown.

``python`` blocks are run as scripts in the same workspace.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"(?<![\w/.-])[A-Z][A-Z0-9_]{2,}(?![\w])|\[|\]|\.\.\.")
NOT_RUN = {
    "make test": "the command that runs this suite",
    ".venv/bin/eml study launch studies/demo": "reaches MTurk and S3 (no network here; the flow is tested with "
                                               "botocore's Stubber and moto)",
    ".venv/bin/eml study collect studies/demo": "reaches MTurk (tested with botocore's Stubber)",
    ".venv/bin/eml study collect studies/demo && .venv/bin/eml study analyze studies/demo":
        "reaches MTurk (tested with botocore's Stubber)",
    ".venv/bin/eml study serve studies/demo --participants 3": "serves until stopped (the lab server is tested "
                                                               "in a real browser)",
    ".venv/bin/eml study analyze studies/demo": "needs answers collected from MTurk or the lab (the analysis is "
                                                "tested on simulated answers)",
    ".venv/bin/eml dashboard --results out/demo": "serves until stopped (tests/dashboard/test_browser.py runs a real "
                                                  "`eml dashboard` in a browser and stops it with SIGTERM)",
}
MEASUREMENTS = "benchmarks.md"


def _blocks(language: str) -> list[tuple[Path, str]]:
    found = []
    for document in DOCUMENTS:
        for match in re.finditer(rf"```{language}\n(.*?)```", document.read_text(), re.S):
            found.append((document, match.group(1)))
    return found


def _check_script_options(words: list[str], workspace_root: Path = ROOT) -> None:
    """``.venv/bin/python benchmarks/X.py --a 1 --b``: the script exists and its --help names every option."""
    script = workspace_root / words[1]
    assert script.is_file(), f"no script {words[1]}"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300,
                            cwd=workspace_root)
    assert result.returncode == 0, f"{words[1]} --help: {result.stderr[-2000:]}"
    for word in words[2:]:
        option = word.split("=")[0].split("|")[0].strip("[]")
        if option.startswith("--"):
            assert option in result.stdout, f"{words[1]}: no option {option}"


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` of every command line in a bash block, comments dropped."""
    commands = []
    for document, body in _blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append((document.name, " ".join(shlex.quote(w) if " " in w else w for w in words)))
    return commands


def _is_template(command: str) -> bool:
    return bool(PLACEHOLDER.search(command)) or "|" in command.replace("||", "").replace("&&", "")


def _eml_invocations(command: str) -> list[list[str]]:
    """The argument lists of every ``eml`` call in a (template) command line, brackets opened, choices resolved."""
    text = command.replace("[", " ").replace("]", " ")
    calls = []
    for part in re.split(r"&&|;", text):
        words = shlex.split(part)
        if words and words[0].endswith("eml"):
            calls.append([w.split("|")[0] if w.startswith("-") or "|" in w else w for w in words[1:]])
    return calls


def _check_against_cli(arguments: list[str]) -> None:
    """Walk the click command tree: every subcommand and option named must exist."""
    from flows.cli import cli

    command: click.Command = cli
    rest = list(arguments)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"no command {name!r} under {command.name!r}"
        command = command.commands[name]
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{command.name}: no option {word!r} (has {sorted(options)})"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A fresh-checkout look-alike: the project files (links), its .venv, ``../shared`` beside it.

    The .venv is brought up to date in the repository first (``make setup``, a no-op when it is): otherwise
    ``make demo`` in the workspace would reinstall the package from there, leaving the repository's ``eml``
    script pointing into a temporary folder."""
    setup = subprocess.run(["make", "-s", "setup"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-2000:]
    base = tmp_path_factory.mktemp("docs")
    repo = base / "repo"
    repo.mkdir()
    for name in ("Makefile", "requirements.txt", "pyproject.toml", "prefect.yaml", ".venv", "benchmarks", "flows",
                 "tasks", "eml_core", "amt", "tests"):
        (repo / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "data", repo / "data", ignore=shutil.ignore_patterns("generated"))
    shared = ROOT.parent / "shared"
    if shared.exists():
        (base / "shared").symlink_to(shared)
    return repo


def _environment(cwd: Path, lane: int = 0) -> dict:
    env = dict(os.environ, EML_NO_PROGRESS="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
               PREFECT_HOME=str(cwd / (".prefect" if lane == 0 else f".prefect-{lane}")))  # one database per lane
    env.pop("PREFECT_API_URL", None)  # the commands start their own ephemeral server, as a user's would
    return env


COMMAND_SECONDS = 900
OUTPUT_OPTIONS = ("--out", "--models", "--results", "--data")   # options whose folder or file a command writes
READ_ONLY = ("data/", "../shared/", ".venv/", "benchmarks/")     # inputs no documented command writes


def _paths(command: str, cwd: Path) -> tuple[set[str], set[str]]:
    """``(reads, writes)``: the paths a command names (``kind:PATH`` specs opened), outputs being the values of
    :data:`OUTPUT_OPTIONS`; a study file's ``source:`` counts as read (the build reads that run)."""
    reads, writes = set(), set()
    words = shlex.split(command.replace("&&", " "))
    for previous, word in zip(["", *words], words, strict=False):
        path = word.split(":", 1)[1] if re.match(r"^[a-z0-9_]+:[^/]", word) else word
        if word.startswith("-") or "/" not in path or path.startswith(READ_ONLY[2:]):
            continue
        (writes if previous in OUTPUT_OPTIONS else reads).add(os.path.normpath(path))
        if path.endswith((".yaml", ".yml")) and (cwd / path).is_file():
            source = re.search(r"^source:\s*(\S+)", (cwd / path).read_text(), re.MULTILINE)
            if source:
                reads.add(os.path.normpath(source[1]))
    return {p for p in reads if not p.startswith(READ_ONLY[:2])}, writes


def _related(a: str, b: str) -> bool:
    """One path is the other or a folder holding it (component-wise: ``runs/a`` does not hold ``runs/ab``)."""
    a_parts, b_parts = Path(a).parts, Path(b).parts
    shorter = min(len(a_parts), len(b_parts))
    return a_parts[:shorter] == b_parts[:shorter]


def _conflict(first: tuple[set[str], set[str]], second: tuple[set[str], set[str]]) -> bool:
    """Whether two commands must not run at once: one writes what the other reads or writes."""
    (reads_1, writes_1), (reads_2, writes_2) = first, second
    return any(_related(w, p) for w in writes_1 for p in reads_2 | writes_2) or \
        any(_related(w, p) for w in writes_2 for p in reads_1)


def _run_all(commands: list[tuple[str, str]], cwd: Path, lanes: int, timings: str | None) -> list[str]:
    """Run ``(where, command)`` in order, at most ``lanes`` at once, a command waiting while it conflicts with a
    running one; returns one message per command that failed (all run: later failures are reported too)."""
    running: list[tuple[str, str, tuple, subprocess.Popen, float, int, Path]] = []
    failures: list[str] = []

    def finish(entry) -> None:
        where, command, _, process, started, _, log = entry
        if process.poll() is None:   # over its time: stop it and what it started
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if timings:
            with open(timings, "a") as handle:
                handle.write(f"{time.monotonic() - started:7.1f} s  {where}: {command}\n")
        if process.returncode != 0:
            failures.append(f"{where}: `{command}` exited {process.returncode}\n{log.read_text()[-6000:]}")
        running.remove(entry)

    def wait_for_one() -> None:
        while True:
            for entry in running:
                if entry[3].poll() is not None or time.monotonic() - entry[4] > COMMAND_SECONDS:
                    finish(entry)
                    return
            time.sleep(0.1)

    for number, (where, command) in enumerate(commands):
        paths = _paths(command, cwd)
        while len(running) >= lanes or any(_conflict(paths, entry[2]) for entry in running):
            wait_for_one()
        lane = min(set(range(lanes)) - {entry[5] for entry in running})
        log = cwd.parent / f"command-{len(commands)}-{number:02d}.log"   # beside the workspace, not in it
        with open(log, "w") as out:
            process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=_environment(cwd, lane), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        running.append((where, command, paths, process, time.monotonic(), lane, log))
    while running:
        wait_for_one()
    return failures


def test_the_docs_show_commands_and_each_is_classified():
    commands = documented_commands()
    assert len(commands) >= 10
    for where, command in commands:
        if command in NOT_RUN or _is_template(command):
            continue
        assert command.startswith((".venv/bin/", "make ")), f"{where}: {command!r} is neither make nor .venv/bin"


def test_every_template_names_real_commands_and_options():
    checked = 0
    for where, command in documented_commands():
        if command in NOT_RUN or not (_is_template(command) or where == MEASUREMENTS):
            continue
        words = shlex.split(command.replace("[", " ").replace("]", " "))
        if words[0].endswith("python"):
            _check_script_options(words)
            checked += 1
            continue
        for arguments in _eml_invocations(command):
            try:
                _check_against_cli(arguments)
            except AssertionError as error:
                raise AssertionError(f"{where}: {command}\n{error}") from None
            checked += 1
    assert checked > 0


@pytest.mark.slow
def test_every_concrete_command_runs_as_written(workspace):
    to_run: list[tuple[str, str]] = []
    for where, command in documented_commands():
        if command in NOT_RUN or _is_template(command) or where == MEASUREMENTS:
            continue
        if command not in [c for _, c in to_run]:  # shown in two documents (README and a page): once, where first
            to_run.append((where, command))
    assert to_run[0] == ("README.md", "make demo")
    timings = os.environ.get("EML_DOCS_TIMINGS")  # where the suite's time goes: seconds per documented command
    failures = _run_all(to_run[:1], workspace, 1, timings)   # make demo alone: everything after reads out/demo
    assert not failures, failures[0]
    failures = _run_all(to_run[1:], workspace, int(os.environ.get("EML_DOCS_LANES", "2")), timings)
    assert not failures, f"{len(failures)} documented commands failed; the first:\n{failures[0]}"
    entry = (ROOT / ".venv" / "bin" / "eml").read_text().splitlines()[0]   # nothing reinstalled from the workspace
    assert str(workspace) not in entry, f".venv/bin/eml now starts with {entry!r}"


def test_commands_that_touch_the_same_files_never_run_at_once(tmp_path):
    """The lanes' rule on the documents' own kinds of commands."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "study.yaml").write_text("kind: x\nsource: out/demo   # a run\n")
    train = _paths(".venv/bin/eml train --dataset synthetic --out runs/triplet.pt", tmp_path)
    evaluate = _paths(".venv/bin/eml evaluate localization --model runs/triplet.pt --out runs/triplet-loc", tmp_path)
    other = _paths(".venv/bin/eml evaluate orientation --dataset cvusa:out/demo/crossview/data --out runs/o", tmp_path)
    index = _paths(".venv/bin/eml index build --model out/demo/model.pt --out out/demo/index", tmp_path)
    study = _paths(".venv/bin/eml study build data/study.yaml --out studies/demo", tmp_path)
    assert _conflict(train, evaluate) and _conflict(evaluate, train)      # reads what the other writes
    assert not _conflict(train, other) and not _conflict(evaluate, other)
    assert _conflict(index, study)                                        # the study reads out/demo (its source)
    assert not _conflict(index, other)                                    # out/demo/index vs out/demo/crossview
    assert _conflict(other, _paths(".venv/bin/eml x --out runs/o", tmp_path))   # the same output
    assert not _related("runs/triplet.pt", "runs/triplet-loc") and _related("out/demo", "out/demo/index")


@pytest.mark.slow
def test_every_python_example_runs(workspace):
    for index, (document, body) in enumerate(_blocks("python")):
        script = workspace / f"example_{index}.py"
        script.write_text(body)
        result = subprocess.run([sys.executable, script.name], cwd=workspace, capture_output=True, text=True,
                                timeout=600, env=dict(os.environ, EML_NO_PROGRESS="1"))
        assert result.returncode == 0, f"{document.name}, python block {index}:\n{result.stderr[-3000:]}"
