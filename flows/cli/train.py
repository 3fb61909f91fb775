"""``eml train``: the training flow."""

from __future__ import annotations

import click

from flows.cli.common import CONTEXT, DATASET_HELP, DEVICE_HELP, command, prefect_environment


@click.command("train", context_settings=CONTEXT)
@click.option("--dataset", default="synthetic", help=DATASET_HELP)
@click.option("--out", "checkpoint", required=True, help="checkpoint file to write")
@click.option("--loss", type=click.Choice(["multi_similarity", "triplet"]), default="multi_similarity")
@click.option("--epochs", type=click.IntRange(min=1), default=30)
@click.option("--backbone", default="mobilenet_v2", help="resnet50, vgg16 or mobilenet_v2")
@click.option("--head", default="gap_fc", help="gap, gmp, gap_fc, gmp_fc, gap_bn, flatten_fc_bn or gap_fc_relu_fc")
@click.option("--embedding-dim", type=click.IntRange(min=1), default=512)
@click.option("--fine-tune", is_flag=True, help="train the backbone too (for GPUs)")
@click.option("--seed", type=click.IntRange(min=0), default=0)
@click.option("--device", default="auto", help=DEVICE_HELP)
@command
def train(dataset, checkpoint, loss, epochs, backbone, head, embedding_dim, fine_tune, seed, device):
    """Train a metric-learning model (Prefect flow `train`): frozen pretrained backbone + trained head by
    default, Recall@K on both splits, checkpoint written atomically."""
    from tasks.configs import TrainConfig, validated

    config = validated(TrainConfig, dataset=dataset, checkpoint=checkpoint, device=device,
                       training={"backbone": backbone, "head": head, "embedding_dim": embedding_dim, "loss": loss,
                                 "epochs": epochs, "fine_tune": fine_tune, "seed": seed})
    config.check_inputs()
    prefect_environment()
    from flows.train import train as train_flow

    result = train_flow(config)
    click.echo(result["retrieval_metrics"].to_string(index=False))
    click.echo(f"checkpoint: {result['checkpoint']}")
