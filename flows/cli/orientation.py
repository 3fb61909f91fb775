"""``eml evaluate orientation`` and ``eml train-crossview``: the cross-view orientation experiment (paper
Section VII-A, Figs. 8 and 9) and the two-branch model it explains."""

from __future__ import annotations

import math

import click

from eml_core.errors import ArgumentError
from flows.cli.common import (
    CONTEXT,
    DEVICE_HELP,
    FACTORY_HELP,
    InputSizeType,
    command,
    prefect_environment,
    split_list,
    trust_model_factories,
)

CROSSVIEW_DATASET_HELP = "cvusa:PATH, cvact:PATH or synthetic[:FOLDER] (the embedded pairs, generated on first use)"
CROSSVIEW_MODEL_HELP = ("a backbone name (a new two-branch network: ImageNet branches, the shared FC untrained from "
                        "a fixed seed), a checkpoint from `eml train-crossview`, or package.module:factory")


def parse_angles(text: str | None) -> tuple[float, ...]:
    """``0,30,90`` -> angles in degrees; anything else names ``--rotations``."""
    if not text:
        return ()
    try:
        angles = tuple(float(part) for part in split_list(text))
    except ValueError:
        raise ArgumentError("--rotations", f"expected comma-separated angles in degrees (e.g. 0,30,90), got {text!r}"
                            ) from None
    if not angles or not all(math.isfinite(a) for a in angles):
        raise ArgumentError("--rotations", f"expected finite angles in degrees (e.g. 0,30,90), got {text!r}")
    return angles


@click.command("orientation", context_settings=CONTEXT)
@click.option("--dataset", required=True, help=CROSSVIEW_DATASET_HELP)
@click.option("--model", default="mobilenet_v2", help=CROSSVIEW_MODEL_HELP)
@click.option("--out", required=True, help="results folder or s3://bucket/prefix")
@click.option("--split", help="split to evaluate  [default: val (CVUSA, the embedded pairs), all (CVACT)]")
@click.option("--rotations", help="the same angles for every pair, comma-separated degrees (e.g. 0,30,90)")
@click.option("--random-rotations", type=click.IntRange(1, 360),
              help="angles per pair drawn uniformly in [0, 360) from the seed and the pair id  [default: 1, unless "
                   "--rotations]")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="of the random rotations")
@click.option("--overall-maps", default="decomposition,decomposition_bias",
              help="overall maps: decomposition, decomposition_bias")
@click.option("--top-k", type=click.IntRange(min=0), default=10,
              help="panorama cells of the point_specific_top{k} estimator (0: leave it out)")
@click.option("--fill", type=click.Choice(["reflect", "disc"]), default="reflect",
              help="corners uncovered by a rotation: reflected image, or only the inscribed disc kept at every angle")
@click.option("--max-pairs", type=click.IntRange(min=1), help="only the split's first N pairs (quick runs)")
@click.option("--examples", type=click.IntRange(0, 100), default=2, help="Fig. 8 panels (the first pairs)")
@click.option("--shard-size", type=click.IntRange(min=1), default=128, help="at most this many pairs per shard task")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, help="rotated pairs explained at once")
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--model-factory", help=FACTORY_HELP)
@command
def orientation(dataset, model, out, split, rotations, random_rotations, seed, overall_maps, top_k, fill, max_pairs,
                examples, shard_size, batch_size, device, model_factory):
    """Cross-view orientation (paper Section VII-A, Figs. 8, 9): rotate each aerial image by known angles and
    recover them from overall and point-specific maps; tables, figures and manifest in --out."""
    from tasks.configs import OrientationConfig, validated

    angles = parse_angles(rotations)
    if angles and random_rotations is not None:
        raise ArgumentError("--rotations", "give --rotations or --random-rotations, not both")
    trust_model_factories(model_factory, model)
    values = {"rotations": angles} if angles else {"random_rotations": random_rotations or 1}
    config = validated(OrientationConfig, dataset=dataset, model=model, out=out, split=split, seed=seed,
                       overall_maps=split_list(overall_maps), top_k=top_k, fill=fill, max_pairs=max_pairs,
                       examples=examples, shard_size=shard_size, batch_size=batch_size, device=device, **values)
    config.check_inputs()  # before a flow (and its server) starts
    prefect_environment()
    from flows.evaluate_orientation import evaluate_orientation
    from tasks.orientation_summary import orientation_markdown

    result = evaluate_orientation(config)
    click.echo(orientation_markdown(result, result["manifest"]["dataset"]["name"]))


@click.command("train-crossview", context_settings=CONTEXT)
@click.option("--dataset", default="synthetic", help=CROSSVIEW_DATASET_HELP)
@click.option("--out", "checkpoint", required=True, help="checkpoint file to write")
@click.option("--train-split", default="train")
@click.option("--validation-split", default="val", help="Recall@K after training ('' for none)")
@click.option("--epochs", type=click.IntRange(min=1), default=30)
@click.option("--backbone", default="mobilenet_v2", help="of both branches: resnet50, vgg16 or mobilenet_v2")
@click.option("--embedding-dim", type=click.IntRange(min=1), default=4096, help="outputs of the shared FC")
@click.option("--panorama-size", type=InputSizeType(), default="224x1232", help="panorama input, HxW")
@click.option("--aerial-size", type=InputSizeType(), default="512x512", help="aerial input, HxW")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, help="pairs per batch (in-batch negatives)")
@click.option("--learning-rate", type=click.FloatRange(min=0), default=1e-3, help="of the shared FC")
@click.option("--rotations-per-aerial", type=click.IntRange(1, 360), default=4,
              help="cached regime: rotated copies of each training aerial image (each epoch draws one)")
@click.option("--fill", type=click.Choice(["reflect", "disc"]), default="reflect", help="of the rotated corners")
@click.option("--fine-tune", is_flag=True, help="train both backbones too, a fresh angle per drawn image (for GPUs)")
@click.option("--num-workers", type=click.IntRange(0, 256), default=0, help="--fine-tune: processes decoding images")
@click.option("--seed", type=click.IntRange(min=0), default=0)
@click.option("--device", default="auto", help=DEVICE_HELP)
@command
def train_crossview(dataset, checkpoint, train_split, validation_split, epochs, backbone, embedding_dim,
                    panorama_size, aerial_size, batch_size, learning_rate, rotations_per_aerial, fill, fine_tune,
                    num_workers, seed, device):
    """Train the two-branch street-to-aerial model (Prefect flow `train_crossview`): CVM-Net's loss, aerial images
    randomly rotated; frozen ImageNet backbones with cached features by default, --fine-tune end to end."""
    from tasks.configs import CrossViewTrainConfig, validated

    for name, size in (("--panorama-size", panorama_size), ("--aerial-size", aerial_size)):
        if not isinstance(size, tuple):
            raise ArgumentError(name, f"expected HxW in pixels (e.g. 224x1232), got {size!r}")
    training = {"backbone": backbone, "embedding_dim": embedding_dim, "panorama_size": panorama_size,
                "aerial_size": aerial_size, "epochs": epochs, "batch_size": batch_size,
                "learning_rate": learning_rate, "rotations_per_aerial": rotations_per_aerial, "aerial_fill": fill,
                "fine_tune": fine_tune, "num_workers": num_workers, "seed": seed}
    config = validated(CrossViewTrainConfig, dataset=dataset, checkpoint=checkpoint, train_split=train_split,
                       validation_split=validation_split or None, device=device, training=training)
    config.check_inputs()
    prefect_environment()
    from flows.train_crossview import train_crossview as train_flow

    result = train_flow(config)
    recall = result["crossview_recall"]
    click.echo(f"trained on {result['train_pairs']} pairs; feature cache {result['cache_seconds']:.1f} s, "
               f"{result['mean_epoch_seconds']:.2f} s per epoch; loss {result['loss_history'][0]:.4f} -> "
               f"{result['loss_history'][-1]:.4f}")
    if len(recall):
        click.echo("validation Recall@K (street -> aerial, " + f"{int(recall['count'].iloc[0])} pairs): " +
                   ", ".join(f"R@{r['at']} {r['recall']:.3f}" for _, r in recall.iterrows()))
    if result["errors"]:
        click.echo(f"{len(result['errors'])} problem(s) with the data, e.g. {result['errors'][0]['problem']}",
                   err=True)
    click.echo(f"checkpoint: {result['checkpoint']}")
