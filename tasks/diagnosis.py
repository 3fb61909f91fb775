"""The tables of model diagnosis (paper Tables III and IV), from each model's localization results.

Models are named by the loss their checkpoint records (``multi_similarity``, ``triplet``), never by their
position on the command line, and the drop is always the Multi-Similarity model's accuracy minus the other's:
``eml diagnose --models triplet.pt,ms.pt`` and ``--models ms.pt,triplet.pt`` give the same table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eml_core.models import recorded_config
from eml_core.tables import frame
from tasks.provenance import model_fingerprint, software
from tasks.runs import Run, finish_run

REFERENCE_LOSS = "multi_similarity"  # the paper's reference model in Tables III/IV


def model_name(spec: str) -> str:
    return Path(spec).stem if Path(spec).suffix else spec.replace(":", "_")


def recorded_loss(spec: str) -> str:
    """The training loss a checkpoint records (``training.loss``), or ``""``."""
    training = recorded_config(spec).get("training")
    loss = training.get("loss") if isinstance(training, dict) else None
    return loss if isinstance(loss, str) else ""


def model_names(models: tuple[str, ...]) -> dict[str, str]:
    """Each spec's name in the tables: its recorded loss; the loss and the file name when two share a loss; the
    file name when no loss is recorded."""
    losses = {spec: recorded_loss(spec) for spec in models}
    names = {}
    for spec, loss in losses.items():
        shared = sum(other == loss for other in losses.values()) > 1
        names[spec] = f"{loss} ({model_name(spec)})" if loss and shared else (loss or model_name(spec))
    return names


def reference_model(models: tuple[str, ...]) -> str:
    """The Multi-Similarity checkpoint when exactly one records that loss; the first model otherwise."""
    multi_similarity = [spec for spec in models if recorded_loss(spec) == REFERENCE_LOSS]
    return multi_similarity[0] if len(multi_similarity) == 1 else models[0]


def diagnosis_rows(models: tuple[str, ...], results: dict[str, dict]) -> pd.DataFrame:
    """One row per (model, method): Recall@1 on the training and the evaluation split, best training-split
    localization accuracy, and the accuracy drop reference minus this model (reference: the Multi-Similarity
    model, :func:`reference_model`)."""
    names = model_names(models)
    reference = reference_model(models)
    reference_accuracy = {row["method"]: row["best_accuracy"] for _, row in results[reference]["best"].iterrows()}
    rows = []
    for spec in models:
        result = results[spec]
        recall = result["retrieval"]
        recall_1 = {}
        for split in ("train", "test"):
            chosen = recall[(recall["split"] == split) & (recall["k"] == 1)]
            recall_1[split] = float(chosen["recall"].iloc[0]) if len(chosen) else float("nan")
        for _, best in result["best"].iterrows():
            rows.append({"model": names[spec], "loss": recorded_loss(spec),
                         "checkpoint_sha256": model_fingerprint(spec), "method": best["method"],
                         "recall_at_1_train": recall_1["train"],
                         "recall_at_1_test": recall_1["test"], "train_localization_accuracy": best["best_accuracy"],
                         "best_threshold": best["best_threshold"], "reference_model": names[reference],
                         "accuracy_drop_vs_reference": reference_accuracy.get(best["method"], float("nan"))
                         - best["best_accuracy"]})
    return frame("diagnosis", rows)


def write_diagnosis(run: Run, config, table: pd.DataFrame, results: dict[str, dict]) -> str:
    """``diagnosis.parquet`` and the manifest (naming each model's localization run) in the diagnosis run's
    folder; then the run is registered."""
    store = run.location
    store.write_table("diagnosis.parquet", "diagnosis", table)
    split_rules = {r["manifest"]["dataset"].get("split_rule") for r in results.values()}
    split_rule = split_rules.pop() if len(split_rules) == 1 else ""
    manifest = {"kind": "diagnose_models", "run": {"kind": run.kind, "run_id": run.run_id},
                "config": config.to_dict(), "split_rule": split_rule, **software(),
                "models": {spec: {"name": name, "loss": recorded_loss(spec)}
                           for spec, name in model_names(config.models).items()},
                "reference_model": reference_model(config.models),
                "localization_runs": {spec: result["location"] for spec, result in results.items()},
                "errors": sum(int(r["manifest"]["errors"]) for r in results.values()),
                "warnings": sum(int(r["manifest"]["warnings"]) for r in results.values())}
    store.write_json("manifest.json", manifest)
    headline = {f"drop/{r['model']}/{r['method']}": float(r["accuracy_drop_vs_reference"])
                for _, r in table.iterrows()}
    finish_run(run, manifest, dataset=config.dataset, split_rule=split_rule, model=",".join(config.models),
               headline=headline)
    return store.location_of("")


def diagnosis_markdown(table: pd.DataFrame, location: str) -> str:
    lines = ["# Model diagnosis", "", f"Results: `{location}`", "",
             "Recall@1 on the training split and on the evaluation split (under the class rule: the training "
             "classes and the unseen classes); training-split localization accuracy (best over the paper's grid); "
             f"drop = accuracy of the reference ({', '.join(sorted(set(table['reference_model'])))}) minus this "
             "model's.", "",
             "| model | method | R@1 train | R@1 test | train loc. acc. (%) | drop vs reference (points) |",
             "|---|---|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['model']} | {r['method']} | {r['recall_at_1_train'] * 100:.1f} | "
                     f"{r['recall_at_1_test'] * 100:.1f} | {r['train_localization_accuracy'] * 100:.1f} | "
                     f"{r['accuracy_drop_vs_reference'] * 100:+.1f} |")
    return "\n".join(lines)
