"""``eml train``: the training flow."""

from __future__ import annotations

import click

from flows.cli.common import (
    CONTEXT,
    DATASET_HELP,
    DEVICE_HELP,
    SPLIT_RULE_HELP,
    InputSizeType,
    command,
    prefect_environment,
)


@click.command("train", context_settings=CONTEXT)
@click.option("--dataset", default="synthetic", help=DATASET_HELP)
@click.option("--split-rule", type=click.Choice(["classes", "official"]), default=None,
              help=f"the model trains on the train split of this rule. {SPLIT_RULE_HELP}")
@click.option("--out", "checkpoint", required=True, help="checkpoint file to write")
@click.option("--loss", type=click.Choice(["multi_similarity", "triplet"]), default="multi_similarity")
@click.option("--epochs", type=click.IntRange(min=1), default=30)
@click.option("--backbone", default="mobilenet_v2", help="resnet50, vgg16 or mobilenet_v2")
@click.option("--head", default="gap_fc", help="gap, gmp, gap_fc, gmp_fc, gap_bn, flatten_fc_bn or gap_fc_relu_fc")
@click.option("--embedding-dim", type=click.IntRange(min=1), default=512)
@click.option("--fine-tune", is_flag=True,
              help="train the backbone too, images streamed from disk (for GPUs; the paper-like configuration is "
                   "--backbone resnet50 --head gmp_fc --fine-tune)")
@click.option("--input-size", type=InputSizeType(), default="224x224", help="network input, HxW")
@click.option("--batch-size", type=click.IntRange(min=2), default=32)
@click.option("--images-per-class", type=click.IntRange(min=2), default=4, help="m of the m-per-class batches")
@click.option("--learning-rate", type=click.FloatRange(min=0), default=1e-3,
              help="of the head (the backbone, when fine-tuned, gets a tenth)")
@click.option("--amp", is_flag=True, help="fine-tuning: bfloat16 autocast of the forward pass (recent GPUs)")
@click.option("--loader-workers", type=click.IntRange(min=0), default=0,
              help="fine-tuning: processes decoding images (0: in the training process; e.g. 8 on a GPU machine)")
@click.option("--seed", type=click.IntRange(min=0), default=0)
@click.option("--device", default="auto", help=DEVICE_HELP)
@command
def train(dataset, split_rule, checkpoint, loss, epochs, backbone, head, embedding_dim, fine_tune, input_size,
          batch_size, images_per_class, learning_rate, amp, loader_workers, seed, device):
    """Train a metric-learning model (Prefect flow `train`) on the train split (the first half of the classes
    by default): frozen pretrained backbone + trained head by default, or --fine-tune; Recall@K on both splits,
    checkpoint written atomically."""
    from tasks.configs import TrainConfig, validated

    if input_size in ("native", "default"):
        raise click.BadParameter("training needs a fixed HxW input size", param_hint="--input-size")
    config = validated(TrainConfig, dataset=dataset, split_rule=split_rule, checkpoint=checkpoint, device=device,
                       training={"backbone": backbone, "head": head, "embedding_dim": embedding_dim, "loss": loss,
                                 "epochs": epochs, "fine_tune": fine_tune, "seed": seed, "input_size": input_size,
                                 "batch_size": batch_size, "images_per_class": images_per_class,
                                 "learning_rate": learning_rate, "amp": amp, "loader_workers": loader_workers})
    config.check_inputs()
    prefect_environment()
    from flows.train import train as train_flow

    result = train_flow(config)
    click.echo(result["retrieval_metrics"].to_string(index=False))
    click.echo(f"checkpoint: {result['checkpoint']}")
