"""`eml dashboard`: bad input is one line before any server starts."""

from __future__ import annotations

import socket

from tests.hostile.harness import run_cli


def test_dashboard_refuses_bad_input_in_one_line(tmp_path, demo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        file = tmp_path / "a-file"
        file.write_text("x")
        broken = tmp_path / "broken"
        (broken / "catalog").mkdir(parents=True)
        (broken / "catalog" / "localization-x.parquet").write_bytes(b"PAR1 nope")
        cases = [
            (["dashboard", "--results", str(tmp_path / "nowhere")], "no such results folder"),
            (["dashboard", "--results", str(file)], "no such results folder"),
            (["dashboard", "--results", str(broken)], "localization-x.parquet"),
            (["dashboard", "--results", "s3://"], "no bucket name"),
            (["dashboard", "--results", demo["root"], "--port", "0"], "is not a TCP port"),
            (["dashboard", "--results", demo["root"], "--port", str(port)], f"port {port} on 127.0.0.1 is in use"),
            (["dashboard", "--results", demo["root"], "--study", str(tmp_path)], "no study ledger here"),
        ]
        for argv, expected in cases:
            result = run_cli(argv, entry_point="eml dashboard", case=expected)
            assert expected in result.err, (argv, result.err)
