"""Model diagnosis (paper Tables III and IV): several checkpoints, Recall@1 on train and test and
train-set localization accuracy per method, with each model's accuracy drop against the first."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from eml_core.methods import DEFAULT_METHODS
from eml_core.tables import frame
from flows.evaluate_localization import evaluate_localization
from tasks.provenance import model_fingerprint
from eml_core.results import ResultsLocation


def model_name(spec: str) -> str:
    return Path(spec).stem if Path(spec).suffix else spec.replace(":", "_")


@flow(name="diagnose_models", log_prints=True)
def diagnose_models(
    dataset: str,
    models: list[str],
    out: str = "runs/diagnosis",
    methods: list[str] = list(DEFAULT_METHODS),
    shard_size: int = 128,
    device: str = "auto",
) -> pd.DataFrame:
    store = ResultsLocation(out)
    rows, reference = [], {}
    for index, spec in enumerate(models):
        name = model_name(spec)
        result = evaluate_localization(dataset=dataset, model=spec, out=store.location_of(f"models/{name}"),
                                       methods=methods, splits=["train", "test"], localize_splits=["train"],
                                       shard_size=shard_size, device=device)
        recall = result["retrieval"]
        recall_1 = {s: float(recall[(recall["split"] == s) & (recall["k"] == 1)]["recall"].iloc[0])
                    if ((recall["split"] == s) & (recall["k"] == 1)).any() else float("nan") for s in ("train", "test")}
        for _, best in result["best"].iterrows():
            if index == 0:
                reference[best["method"]] = best["best_accuracy"]
            rows.append({"model": name, "checkpoint_sha256": model_fingerprint(spec), "method": best["method"],
                         "recall_at_1_train": recall_1["train"], "recall_at_1_test": recall_1["test"],
                         "train_localization_accuracy": best["best_accuracy"],
                         "best_threshold": best["best_threshold"], "reference_model": model_name(models[0]),
                         "accuracy_drop_vs_reference": reference.get(best["method"], float("nan"))
                         - best["best_accuracy"]})
    table = frame("diagnosis", rows)
    store.write_table("diagnosis.parquet", "diagnosis", table)
    create_table_artifact(key="model-diagnosis", table=table.to_dict("records"),
                          description="Recall@1 and train-set localization accuracy per model and method")
    create_markdown_artifact(key="model-diagnosis-report", markdown=diagnosis_markdown(table, store.location_of("")))
    return table


def diagnosis_markdown(table: pd.DataFrame, location: str) -> str:
    lines = ["# Model diagnosis", "", f"Results: `{location}`", "",
             "| model | method | R@1 train | R@1 test | train loc. acc. (%) | drop vs reference (points) |",
             "|---|---|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['model']} | {r['method']} | {r['recall_at_1_train'] * 100:.1f} | "
                     f"{r['recall_at_1_test'] * 100:.1f} | {r['train_localization_accuracy'] * 100:.1f} | "
                     f"{r['accuracy_drop_vs_reference'] * 100:+.1f} |")
    return "\n".join(lines)
