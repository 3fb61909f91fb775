"""Train a metric-learning model (frozen pretrained backbone + trained head by default) as a Prefect flow."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from eml_core.training import TrainingConfig
from tasks.localization import load_dataset
from tasks.training import train_task


@flow(name="train", log_prints=True)
def train(
    dataset: str = "synthetic",
    checkpoint: str = "runs/models/default.pt",
    loss: str = "multi_similarity",
    epochs: int = 30,
    backbone: str = "mobilenet_v2",
    head: str = "gap_fc",
    embedding_dim: int = 512,
    fine_tune: bool = False,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    logger = get_run_logger()
    config = TrainingConfig(backbone=backbone, head=head, embedding_dim=embedding_dim, loss=loss, epochs=epochs,
                            fine_tune=fine_tune, seed=seed)
    data = load_dataset(dataset)
    result = train_task(data, config, checkpoint, device)
    metrics = result["retrieval_metrics"]
    logger.info(f"trained {backbone}:{head} with {loss} on {result['train_items']} images -> {checkpoint}; "
                f"final loss {result['loss_history'][-1]:.4f}")
    create_table_artifact(key="training-recall", table=metrics.to_dict("records"),
                          description=f"Recall@K of {checkpoint} ({loss})")
    return result
