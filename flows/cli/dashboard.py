"""``eml dashboard --results LOCATION``: the review dashboard (a Streamlit app) on 127.0.0.1.

The app runs as a ``streamlit run`` subprocess: headless, no usage statistics, no file watcher, bound to
127.0.0.1 only. Ctrl-C or SIGTERM stops it cleanly (the subprocess is asked to stop, then waited for)."""

from __future__ import annotations

import click

from flows.cli.common import CONTEXT, command

STOP_SECONDS = 10


@click.command("dashboard", context_settings=CONTEXT)
@click.option("--results", required=True, help="results root to review: a local folder or s3://bucket/prefix")
@click.option("--study", "studies", multiple=True,
              help="a study folder to show (repeatable); studies analysed with --results are found in the catalog")
@click.option("--port", type=int, default=8501, help="port on 127.0.0.1")
@click.option("--live", is_flag=True, help="approve/reject held assignments on production MTurk (default: sandbox)")
@command
def dashboard(results, studies, port, live):
    """Browse runs, compare them, review localization, orientation, retrieval and studies in a web app."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from eml_core.errors import ArgumentError
    from flows.dashboard.settings import APP, environment
    from tasks.review import check_port, check_results_root
    from tasks.studies import check_study

    if isinstance(port, bool) or not 1 <= port <= 65535:
        raise ArgumentError("--port", f"{port} is not a TCP port (1..65535)")
    check_results_root(results)
    for folder in studies:
        check_study(folder)
    check_port("127.0.0.1", port)
    command_line = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
                    "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
                    "--server.fileWatcherType", "none", "--server.runOnSave", "false",
                    "--client.toolbarMode", "viewer"]
    env = {**os.environ, **environment(results, tuple(os.path.abspath(s) for s in studies), live),
           # the app's torch work is drawing 7x7 maps: one thread each, or the threads of concurrent sessions and
           # other jobs fight over the cores (5x slower galleries on a loaded 2-core machine)
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        process = subprocess.Popen(command_line, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
        click.echo(f"dashboard of {results} on http://127.0.0.1:{port} ({'LIVE' if live else 'sandbox'} MTurk for "
                   f"review actions; Ctrl-C or SIGTERM to stop)")
        while not stop.wait(0.5) and process.poll() is None:
            pass
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            click.echo("dashboard stopped")
        elif process.returncode != 0:
            raise click.ClickException(f"the dashboard exited with status {process.returncode}")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
