"""``eml study ...``: build, launch, collect, analyze, serve, expire, reject.

Bad input of any kind (definition files, study folders, corrupt ledgers or tables, ports, assignment ids) ends
in one line and exit status 2; MTurk is only reached once the local checks pass (ledger, mode, bucket, budget
cap)."""

from __future__ import annotations

from pathlib import Path

import click

from flows.cli.common import CONTEXT, command, prefect_environment

LIVE_HELP = "production MTurk (real money; needs a budget cap)"


@click.group("study", context_settings=CONTEXT)
def study():
    """Human studies: build, launch, collect, analyze, serve, expire, reject."""


@study.command("build", context_settings=CONTEXT)
@click.argument("definition")
@click.option("--out", required=True, help="study folder")
@command
def build(definition, out):
    """Stimuli, HIT pages and ledger from DEFINITION (.yaml or .json), locally: no AWS call."""
    from tasks.studies import build as build_task

    result = build_task.fn(definition, out)
    click.echo(f"built {result['items']} items in {result['hits']} HITs into {out} (no AWS call made); "
               f"review {out}/hits/*.html")


@study.command("launch", context_settings=CONTEXT)
@click.argument("folder")
@click.option("--live", is_flag=True, help=LIVE_HELP)
@command
def launch(folder, live):
    """Upload stimuli and create the HITs (sandbox unless --live)."""
    from tasks.configs import StudyConfig, validated
    from tasks.studies import check_launch

    check_launch(folder, live)  # before any AWS call
    prefect_environment()
    from flows.studies import launch_study

    result = launch_study(validated(StudyConfig, folder=folder, live=live))
    click.echo(f"{'LIVE' if live else 'sandbox'}: {result['hits']} HITs ({result['created']} created now), "
               f"estimated ${result['estimate']['total_usd']:.2f}")


@study.command("collect", context_settings=CONTEXT)
@click.argument("folder")
@click.option("--live", is_flag=True, help=LIVE_HELP)
@command
def collect(folder, live):
    """Fetch assignments into responses.parquet; approve those passing the catch trials, hold the rest."""
    from tasks.configs import StudyConfig, validated
    from tasks.studies import check_study

    check_study(folder, live)
    prefect_environment()
    from flows.studies import collect_study

    click.echo(collect_study(validated(StudyConfig, folder=folder, live=live)))


@study.command("analyze", context_settings=CONTEXT)
@click.argument("folder")
@command
def analyze(folder):
    """Shares of each answer, tests, confidence intervals, catch trials, chart."""
    from flows.studies import study_markdown
    from tasks.studies import analyze as analyze_task
    from tasks.studies import check_study

    check_study(folder)
    result = analyze_task.fn(folder)
    if result["errors"]:
        click.echo(f"{len(result['errors'])} problems recorded in {Path(folder) / 'errors.parquet'}", err=True)
    click.echo(study_markdown(result["summary"]))


@study.command("serve", context_settings=CONTEXT)
@click.argument("folder")
@click.option("--port", type=int, default=8765, help="port on 127.0.0.1")
@click.option("--participants", type=int, default=1, help="participant links to create (1..1000)")
@command
def serve(folder, port, participants):
    """Serve the HIT pages on 127.0.0.1 for lab participants (Ctrl-C to stop)."""
    import time

    from tasks.studies import lab_server

    server, links = lab_server(folder, port, participants)
    click.echo("participant links:\n" + "\n".join(links) + "\n(Ctrl-C to stop)")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        server.stop()


@study.command("expire", context_settings=CONTEXT)
@click.argument("folder")
@click.option("--live", is_flag=True, help=LIVE_HELP)
@click.option("--delete", is_flag=True, help="also delete the expired HITs")
@command
def expire(folder, live, delete):
    """Stop showing the HITs to workers (submitted work can still be reviewed)."""
    from tasks.studies import expire_hits

    result = expire_hits(folder, live, delete)
    click.echo(f"expired {result['expired']} HITs")
    if delete:
        click.echo(f"deleted {result['deleted']} HITs")


@study.command("reject", context_settings=CONTEXT)
@click.argument("folder")
@click.argument("assignment")
@click.option("--reason", required=True, help="shown to the worker")
@click.option("--live", is_flag=True, help=LIVE_HELP)
@command
def reject(folder, assignment, reason, live):
    """Reject a held ASSIGNMENT, with a reason for the worker."""
    from tasks.studies import reject_assignment

    reject_assignment(folder, assignment, reason, live)
    click.echo(f"rejected {assignment}")
