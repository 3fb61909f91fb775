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
@click.option("--dry-run", is_flag=True, help="print the cost, HITs and qualifications; call nothing")
@command
def launch(folder, live, dry_run):
    """Upload stimuli and create the HITs (sandbox unless --live)."""
    from tasks.configs import StudyConfig, validated
    from tasks.studies import check_launch

    plan = check_launch(folder, live, dry_run=dry_run)  # before any AWS call
    if dry_run:
        click.echo(launch_plan_text(plan))
        return
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
    from tasks.studies import check_aws

    check_aws(folder, live)  # the mode, and credentials, before any flow starts
    prefect_environment()
    from flows.studies import collect_study

    click.echo(collect_study(validated(StudyConfig, folder=folder, live=live)))


@study.command("analyze", context_settings=CONTEXT)
@click.argument("folder")
@click.option("--include-flagged", is_flag=True,
              help="keep answers of workers who failed catch trials or straight-lined, and of held assignments "
                   "(pilots)")
@click.option("--results", default=None, help="also record the analysis in this results root's run catalog "
                                              "(local folder or s3://bucket/prefix), for the dashboard")
@command
def analyze(folder, include_flagged, results):
    """Shares of each answer, tests, confidence intervals, catch trials, chart; publishes the same Prefect
    artifacts as the analyze-study deployment."""
    from tasks.configs import StudyAnalysisConfig, validated
    from tasks.studies import check_analysis

    config = validated(StudyAnalysisConfig, folder=folder, include_flagged=include_flagged, results=results)
    config.check_inputs()
    check_analysis(folder)  # ledger and answers readable: before any flow starts
    prefect_environment()
    from flows.studies import analyze_study, study_markdown

    result = analyze_study(config)
    if result["errors"]:
        click.echo(f"{len(result['errors'])} problems recorded in {Path(folder) / 'errors.parquet'}", err=True)
    click.echo(study_markdown(result["summary"]))
    if include_flagged:
        click.echo("(pilot analysis: flagged workers' and held assignments' answers included)")
    if results is not None:
        click.echo(f"recorded as run {result['catalog']['run_id']} in {results}")


@study.command("serve", context_settings=CONTEXT)
@click.argument("folder")
@click.option("--port", type=int, default=8765, help="port on 127.0.0.1")
@click.option("--participants", type=int, default=1, help="participant links to create (1..1000)")
@command
def serve(folder, port, participants):
    """Serve the HIT pages on 127.0.0.1 for lab participants, with a status page (Ctrl-C or SIGTERM stops it)."""
    import signal
    import threading

    from tasks.studies import lab_server

    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        server, links = lab_server(folder, port, participants)
        try:
            click.echo("participant links:\n" + "\n".join(links) + f"\nstatus page: {server.status_url}"
                       "\n(Ctrl-C or SIGTERM to stop)")
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()  # open connections end; every answer received is already saved
        click.echo("lab server stopped")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


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


def launch_plan_text(plan: dict) -> str:
    """What ``eml study launch --dry-run`` prints."""
    estimate = plan["estimate"]
    lines = [f"dry run: nothing was sent to MTurk or S3 ({'LIVE' if plan['live'] else 'sandbox'}: {plan['endpoint']})",
             f"study {plan['study_id']}: {plan['hits']} HITs ({plan['hits_to_create']} still to create) x "
             f"{plan['assignments_per_hit']} assignments, {plan['items_per_hit']} items per HIT, "
             f"reward ${plan['reward_usd']}",
             f"cost: rewards ${estimate['rewards_usd']:.2f} + bonuses ${estimate['bonuses_usd']:.2f} + fees "
             f"${estimate['fees_usd']:.2f} ({estimate['fee_rate']:.0%}) = ${estimate['total_usd']:.2f}; budget cap "
             + (f"${plan['budget_usd']}" if plan["budget_usd"] else "none"),
             f"stimuli: s3://{plan['bucket']} ({plan['url_mode']} URLs)", "qualifications:"]
    for requirement in plan["qualifications"]:
        lines.append(f"  {requirement['qualification']} {requirement['comparator']} "
                     f"{', '.join(map(str, requirement['values']))}".rstrip())
    return "\n".join(lines)
