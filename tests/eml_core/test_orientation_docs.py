"""docs/orientation.md: its Python example and its commands run exactly as written."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "orientation.md").read_text()


def test_the_python_example_runs(tmp_path, monkeypatch, capsys):
    (block,) = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/orientation.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 6                                 # 2 overall maps x 3 methods
    assert {line.split()[1] for line in printed} == {"overall", "point_specific", "point_specific_top10"}


def test_the_commands_run_as_written():
    commands = [line for line in DOC.splitlines() if line.startswith(".venv/bin/python benchmarks/")]
    assert len(commands) == 2
    quick_out = ROOT / "runs" / "orientation_quick"
    try:
        for command in commands:
            done = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True, timeout=300,
                                  check=False)
            assert done.returncode == 0, done.stderr[-2000:]
            if "bench_orientation" in command:
                assert "point_specific_cells == row of P" in done.stdout and "ps_step / aerial_forward" in done.stdout
            else:
                assert "validation recall" in done.stdout and "point_specific_top10" in done.stdout
                written = {p.relative_to(quick_out).as_posix() for p in quick_out.rglob("*") if p.is_file()}
                assert {"tables/orientation_items.parquet", "tables/orientation_summary.parquet",
                        "tables/orientation_histogram.parquet", "tables/crossview_recall.parquet",
                        "tables/errors.parquet", "figures/histogram_decomposition.png", "model.pt",
                        "summary.json"} <= written
    finally:
        shutil.rmtree(quick_out, ignore_errors=True)
