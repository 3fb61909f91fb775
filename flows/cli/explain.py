"""``eml explain``: decompose the similarity of two images (no Prefect server: one task, called directly)."""

from __future__ import annotations

import click

from flows.cli.common import (
    CONTEXT,
    DEVICE_HELP,
    FACTORY_HELP,
    MODEL_HELP,
    InputSizeType,
    PointType,
    command,
    trust_model_factories,
)


@click.command("explain", context_settings=CONTEXT)
@click.argument("query")
@click.argument("retrieved")
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--out", required=True, help="output folder")
@click.option("--point-query", type=PointType(),
              help="X,Y pixel of the query: point-specific map on the retrieved image")
@click.option("--point-retrieved", type=PointType(),
              help="X,Y pixel of the retrieved image: point-specific map on the query")
@click.option("--similarity", type=click.Choice(["cosine", "dot"]), default="cosine")
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--input-size", type=InputSizeType(), default="default",
              help="network input HxW, or 'native' to keep each image's own size (default: the model's preprocessing)")
@click.option("--model-factory", help=FACTORY_HELP)
@click.option("--allow-random-init", is_flag=True,
              help="use random backbone weights when pretrained ones are unavailable (loud warning)")
@command
def explain(query, retrieved, model, out, point_query, point_retrieved, similarity, device, input_size,
            model_factory, allow_random_init):
    """Decompose the similarity of QUERY and RETRIEVED: every map method, point-specific maps, explanation.json."""
    from tasks.configs import ExplainConfig, validated
    from tasks.explain import explain as explain_task
    from tasks.explain import summary_lines

    trust_model_factories(model_factory, model)
    config = validated(ExplainConfig, query=query, retrieved=retrieved, model=model, out=out,
                       point_query=point_query, point_retrieved=point_retrieved, similarity=similarity,
                       device=device, input_size=input_size, allow_random_init=allow_random_init)
    for line in summary_lines(explain_task.fn(config)):
        click.echo(line)
