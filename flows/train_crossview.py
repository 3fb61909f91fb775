"""Train the two-branch street-to-aerial model (paper Section VII-A) as a Prefect flow: CVM-Net's loss with
aerial images randomly rotated; cached features of frozen ImageNet backbones by default (CPU), end to end with
``training.fine_tune`` (GPUs, the full CVUSA)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from tasks.configs import CrossViewTrainConfig, as_config
from tasks.crossview_training import train_crossview_task
from tasks.orientation import load_crossview_dataset


@flow(name="train_crossview", log_prints=True)
def train_crossview(config: CrossViewTrainConfig = CrossViewTrainConfig()) -> dict:
    config = as_config(CrossViewTrainConfig, config)
    config.check_inputs()
    logger = get_run_logger()
    splits = (config.train_split,) + ((config.validation_split,) if config.validation_split else ())
    data = load_crossview_dataset(config.dataset, None if config.dataset.startswith("cvact:") else splits)
    result = train_crossview_task(data, config.training, config.checkpoint, config.train_split,
                                  config.validation_split, config.device)
    recipe = config.training
    logger.info(f"trained the two-branch {recipe.backbone} ({'fine-tuned' if recipe.fine_tune else 'cached features'})"
                f" on {result['train_pairs']} pairs -> {config.checkpoint}; final loss {result['loss_history'][-1]:.4f}"
                f"; {len(result['errors'])} problems")
    if len(result["crossview_recall"]):
        create_table_artifact(key="crossview-recall", table=result["crossview_recall"].to_dict("records"),
                              description=f"Street-to-aerial Recall@K of {config.checkpoint}")
    return result
