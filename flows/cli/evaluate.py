"""``eml evaluate ...`` and ``eml diagnose``: the evaluation flows."""

from __future__ import annotations

import click

from flows.cli.common import (
    CLUSTER_HELP,
    CONTEXT,
    DATASET_HELP,
    DEVICE_HELP,
    FACTORY_HELP,
    MODEL_HELP,
    SPLIT_RULE_HELP,
    command,
    prefect_environment,
    split_list,
    trust_model_factories,
)
from flows.cli.orientation import orientation
from tasks.configs import DEFAULT_METHODS


@click.group("evaluate", context_settings=CONTEXT)
def evaluate():
    """Run an evaluation flow (Prefect; ephemeral mode unless PREFECT_API_URL points at a server)."""


@evaluate.command("localization", context_settings=CONTEXT)
@click.option("--dataset", required=True, help=DATASET_HELP)
@click.option("--split-rule", type=click.Choice(["classes", "official"]), default=None, help=SPLIT_RULE_HELP)
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--out", required=True, help="results folder or s3://bucket/prefix")
@click.option("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated map methods")
@click.option("--splits", default="train,test", help="splits embedded for Recall@K")
@click.option("--table-splits", "localize_splits", default="test",
              help="splits localized for Tables I/II (the paper: the evaluation split only)")
@click.option("--pairing", type=click.Choice(["nearest", "random"]), default="random",
              help="partner of each image: a seeded random same-class image (the authors'), or its nearest one")
@click.option("--sides", default="query,retrieved", help="images of a pair scored: query,retrieved (the authors') "
                                                         "or query")
@click.option("--shard-size", type=click.IntRange(min=1), default=128, help="items per shard task")
@click.option("--connectivity", type=click.Choice(["4", "8"]), default="4", help="of the connected components")
@click.option("--resolution", type=click.Choice(["image", "authors_224"]), default="image",
              help="threshold maps at each image's size, or at 224x224 as the authors did (boxes scaled back)")
@click.option("--seed", type=click.IntRange(min=0), default=0)
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--model-factory", help=FACTORY_HELP)
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="images per batch  [default: chosen from the device: 32 on CPU, by GPU memory on CUDA]")
@click.option("--precision", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
              help="autocast precision of the backbone (heads and maps stay float32); for GPUs")
@click.option("--feature-map-cache", type=click.Choice(["float16", "float32", "none"]), default="float32",
              help="keep each image's feature map from the embedding pass at this precision and explain from it; "
                   "none: decode and run the backbone again")
@click.option("--cluster", default="", help=CLUSTER_HELP)
@command
def localization(dataset, split_rule, model, out, methods, splits, localize_splits, pairing, sides, shard_size,
                 connectivity, resolution, seed, device, model_factory, batch_size, precision, feature_map_cache,
                 cluster):
    """Weakly supervised localization (paper Tables I, II) under the paper's protocol by default (class split,
    evaluation split only, random same-class pairs, both images scored): tables, figures and manifest in --out."""
    from tasks.configs import LocalizationConfig, validated

    trust_model_factories(model_factory, model)
    config = validated(LocalizationConfig, dataset=dataset, split_rule=split_rule, model=model, out=out,
                       methods=split_list(methods), splits=split_list(splits),
                       localize_splits=split_list(localize_splits), pairing=pairing, sides=split_list(sides),
                       shard_size=shard_size, connectivity=int(connectivity), resolution=resolution, seed=seed,
                       device=device, batch_size=batch_size, precision=precision,
                       feature_map_cache=feature_map_cache, cluster=cluster)
    config.check_inputs()  # before a flow (and its server) starts
    prefect_environment()
    from flows.evaluate_localization import evaluate_localization
    from tasks.summary import markdown_report

    result = evaluate_localization(config)
    click.echo(markdown_report(result, result["manifest"]["dataset"]["name"]))


@click.command("diagnose", context_settings=CONTEXT)
@click.option("--dataset", required=True, help=DATASET_HELP)
@click.option("--split-rule", type=click.Choice(["classes", "official"]), default=None, help=SPLIT_RULE_HELP)
@click.option("--models", required=True,
              help="comma-separated checkpoints; the Multi-Similarity one (by the loss it records) is the reference")
@click.option("--out", required=True, help="results folder or s3://bucket/prefix")
@click.option("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated map methods")
@click.option("--shard-size", type=click.IntRange(min=1), default=128, help="items per shard task")
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--model-factory", help=FACTORY_HELP)
@click.option("--cluster", default="", help=CLUSTER_HELP)
@command
def diagnose(dataset, split_rule, models, out, methods, shard_size, device, model_factory, cluster):
    """Compare checkpoints (paper Tables III, IV): Recall@1 on the training and the unseen classes, training-set
    localization accuracy, and the drop Multi-Similarity minus Triplet."""
    from tasks.configs import DiagnoseConfig, validated

    trust_model_factories(model_factory, *split_list(models))
    config = validated(DiagnoseConfig, dataset=dataset, split_rule=split_rule, models=split_list(models), out=out,
                       methods=split_list(methods), shard_size=shard_size, device=device, cluster=cluster)
    config.check_inputs()
    prefect_environment()
    from flows.diagnose import diagnose_models
    from tasks.diagnosis import diagnosis_markdown

    table = diagnose_models(config)
    click.echo(diagnosis_markdown(table, config.out))


evaluate.add_command(orientation)
