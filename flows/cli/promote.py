"""``eml promote CHECKPOINT``: set the model the nightly run uses, and record the promotion in the run catalog."""

from __future__ import annotations

import os

import click

from flows.cli.common import CONTEXT, command


@click.command("promote", context_settings=CONTEXT)
@click.argument("checkpoint")
@click.option("--models", default=None, help="folder the nightly run reads current.pt from [default: $EML_MODELS]")
@click.option("--results", default=None, help="results root whose catalog records it [default: $EML_RESULTS]")
@command
def promote(checkpoint, models, results):
    """Copy CHECKPOINT to MODELS/current.pt (atomically; kept as MODELS/promoted/<sha256>.pt) and add a catalog row."""
    from eml_core.errors import ArgumentError
    from tasks.configs import check_results_location
    from tasks.promotion import promote as promote_checkpoint

    models = models or os.environ.get("EML_MODELS")
    results = results or os.environ.get("EML_RESULTS")
    if not models:
        raise ArgumentError("--models", "not given and EML_MODELS is not set")
    if not results:
        raise ArgumentError("--results", "not given and EML_RESULTS is not set")
    try:
        check_results_location(results)
    except ValueError as error:
        raise ArgumentError("--results", str(error)) from None
    done = promote_checkpoint(checkpoint, models, results)
    previous = f"; it replaces {done['previous_sha256'][:16]}" if done["previous_sha256"] else ""
    click.echo(f"promoted {checkpoint} (sha256 {done['sha256'][:16]}) -> {done['current']}{previous}; "
               f"recorded as promotion run {done['run_id']} in {results}")
