"""The library example of docs/faithfulness.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eml_core.methods import DEFAULT_METHODS

DOC = Path(__file__).resolve().parents[2] / "docs" / "faithfulness.md"


@pytest.mark.slow
def test_the_library_example_runs_as_written(tmp_path, monkeypatch, capsys):
    text = DOC.read_text()
    section = text[text.index("## Library API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["errors"] == [] and namespace["point_errors"] == [] and namespace["sanity_errors"] == []
    orderings = len(DEFAULT_METHODS) + 2                       # the default methods, random, gradient oracle
    assert len(namespace["curves"]) == 2 * orderings * 2 * 4  # sides x orderings x curves x steps
    assert namespace["count"].images == 4 + 2 * (2 + orderings * 2 * 2)
    assert namespace["png"][:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "deletion_auc" in printed and "passes" in printed
