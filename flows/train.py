"""Train a metric-learning model (frozen pretrained backbone + trained head by default, or fine-tuned end to end)
on the train split of the dataset's split rule (the first half of the classes by default) as a Prefect flow."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from tasks.configs import TrainConfig, as_config
from tasks.localization import load_dataset
from tasks.training import train_model_task


@flow(name="train", log_prints=True)
def train(config: TrainConfig = TrainConfig()) -> dict:
    config = as_config(TrainConfig, config)
    config.check_inputs()
    logger = get_run_logger()
    data = load_dataset(config.dataset, config.split_rule)
    result = train_model_task(data, config.training, config.checkpoint, config.device)
    recipe = config.training
    logger.info(f"trained {recipe.backbone}:{recipe.head} with {recipe.loss} on {result['train_items']} images -> "
                f"{config.checkpoint}; final loss {result['loss_history'][-1]:.4f}")
    create_table_artifact(key="training-recall", table=result["retrieval_metrics"].to_dict("records"),
                          description=f"Recall@K of {config.checkpoint} ({recipe.loss})")
    return result
