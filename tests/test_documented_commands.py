"""Every command the README and the docs show is run by this test exactly as written.

A documented example that fails is a bug (one retrieval study shipped that way). The commands are read from the
``bash`` blocks of README.md and docs/*.md, in that order, continuation lines joined:

* a **concrete** command (no placeholder) runs as written with ``bash -c`` in a workspace that looks like a fresh
  checkout (this repository's ``.venv``, ``data/``, Makefile and project files, ``../shared`` beside it), one
  after the other, so later commands see what earlier ones wrote (``make demo`` writes ``out/demo``, which the
  study commands read); it must exit 0; a command shown in two documents runs once, where it first appears;
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
    """A fresh-checkout look-alike: the project files (links), its .venv, ``../shared`` beside it."""
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


def _run(command: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, EML_NO_PROGRESS="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120", PREFECT_HOME=str(cwd / ".prefect"))
    env.pop("PREFECT_API_URL", None)  # the commands start their own ephemeral server, as a user's would
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          start_new_session=True)


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
    ran: list[str] = []
    for where, command in documented_commands():
        if command in NOT_RUN or _is_template(command) or where == MEASUREMENTS:
            continue
        if command in ran:  # shown in two documents (README and a page): run once, in its first place
            continue
        started = time.monotonic()
        result = _run(command, workspace)
        if os.environ.get("EML_DOCS_TIMINGS"):  # where the suite's time goes: seconds per documented command
            with open(os.environ["EML_DOCS_TIMINGS"], "a") as timings:
                timings.write(f"{time.monotonic() - started:7.1f} s  {where}: {command}\n")
        assert result.returncode == 0, (f"{where}: `{command}` exited {result.returncode}\n"
                                        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        ran.append(command)
    assert "make demo" in ran


@pytest.mark.slow
def test_every_python_example_runs(workspace):
    for index, (document, body) in enumerate(_blocks("python")):
        script = workspace / f"example_{index}.py"
        script.write_text(body)
        result = subprocess.run([sys.executable, script.name], cwd=workspace, capture_output=True, text=True,
                                timeout=600, env=dict(os.environ, EML_NO_PROGRESS="1"))
        assert result.returncode == 0, f"{document.name}, python block {index}:\n{result.stderr[-3000:]}"
