"""Training the two-branch cross-view model as a Prefect task: fit, measure Recall@K, save the checkpoint."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.crossview_data import CrossViewDataset
from eml_core.crossview_model import save_crossview_model
from eml_core.crossview_training import CrossViewTrainingConfig, train_crossview
from eml_core.models import resolve_device
from eml_core.tables import frame
from tasks.provenance import software


@task(name="train-crossview", tags=["gpu"], cache_policy=NO_CACHE)
def train_crossview_task(dataset: CrossViewDataset, training: CrossViewTrainingConfig, checkpoint: str,
                         train_split: str, validation_split: str | None, device: str = "auto") -> dict:
    """Train on ``train_split`` (aerial images randomly rotated), Recall@K on ``validation_split``, save the
    checkpoint atomically; returns the report with a ``crossview_recall`` table."""
    device = resolve_device(device)
    validation = dataset.split(validation_split) if validation_split else []
    model, report = train_crossview(dataset.split(train_split), validation, training, device=device)
    recall = frame("crossview_recall", [{"model": checkpoint, "split": validation_split, **row}
                                        for row in report.recalls])
    errors = [e.to_dict() for e in dataset.errors + report.errors]
    extra = {"dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(), "train_split": train_split,
             "validation_split": validation_split, "loss_history": report.loss_history,
             "validation_recall_at_1": report.validation_recall_at_1, "crossview_recall": report.recalls,
             "cache_seconds": report.cache_seconds, "epoch_seconds": report.epoch_seconds, "errors": len(errors),
             **software()}
    save_crossview_model(model.cpu(), checkpoint, extra=extra)
    epochs = report.epoch_seconds
    return {"checkpoint": str(checkpoint), "loss_history": report.loss_history, "train_pairs": report.train_pairs,
            "validation_pairs": report.validation_pairs, "crossview_recall": recall, "errors": errors,
            "cache_seconds": report.cache_seconds,
            "mean_epoch_seconds": sum(epochs) / len(epochs) if epochs else 0.0}
