"""Training as Prefect tasks: fit a model on a dataset's train split, then measure Recall@K."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.datasets import Dataset
from eml_core.models import resolve_device, save_model
from eml_core.retrieval import RECALL_KS, embed_items, recall_at_k
from eml_core.tables import frame
from eml_core.training import TrainingConfig, train_model
from tasks import progress
from tasks.provenance import software


@task(name="train-model", tags=["gpu"], cache_policy=NO_CACHE)
def train_model_task(dataset: Dataset, config: TrainingConfig, checkpoint: str, device: str = "auto") -> dict:
    """Train on the train split, save the checkpoint atomically, return the report."""
    device = resolve_device(device)
    with progress.bar(config.epochs, f"training {config.backbone}:{config.head} ({config.loss})") as epochs:

        def on_epoch(epoch: int, loss: float) -> None:
            epochs.set_postfix(loss=f"{loss:.4f}")
            epochs.update()

        model, report = train_model(dataset.split("train"), config, device=device, on_epoch=on_epoch)
    metrics = []
    for split in ("train", "test"):
        kept, embeddings, _ = embed_items(model, dataset.split(split), device=device)
        if len(kept) >= 2:
            for k, value in recall_at_k(embeddings, [i.label for i in kept], RECALL_KS).items():
                metrics.append({"model": Path(checkpoint).stem, "split": split, "k": k, "recall": value,
                                "count": len(kept)})
    extra = {"dataset": dataset.name, "split_rule": dataset.split_rule, "dataset_fingerprint": dataset.fingerprint(),
             "loss_history": report.loss_history,
             "retrieval_metrics": metrics, **software()}
    save_model(model.cpu(), checkpoint, extra=extra)
    return {"checkpoint": str(checkpoint), "split_rule": dataset.split_rule, "loss_history": report.loss_history,
            "train_items": report.train_items,
            "errors": [e.to_dict() for e in report.errors + dataset.errors],
            "retrieval_metrics": frame("retrieval_metrics", pd.DataFrame(metrics))}

