"""The tables of model diagnosis (paper Tables III and IV), from each model's localization results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eml_core.tables import frame
from tasks.provenance import git_commit, model_fingerprint, versions
from tasks.runs import Run, finish_run


def model_name(spec: str) -> str:
    return Path(spec).stem if Path(spec).suffix else spec.replace(":", "_")


def diagnosis_rows(models: tuple[str, ...], results: dict[str, dict]) -> pd.DataFrame:
    """One row per (model, method): Recall@1 on train and test, best train-set localization accuracy, and the
    accuracy drop against the first model."""
    rows, reference = [], {}
    for index, spec in enumerate(models):
        result = results[spec]
        recall = result["retrieval"]
        recall_1 = {}
        for split in ("train", "test"):
            chosen = recall[(recall["split"] == split) & (recall["k"] == 1)]
            recall_1[split] = float(chosen["recall"].iloc[0]) if len(chosen) else float("nan")
        for _, best in result["best"].iterrows():
            if index == 0:
                reference[best["method"]] = best["best_accuracy"]
            rows.append({"model": model_name(spec), "checkpoint_sha256": model_fingerprint(spec),
                         "method": best["method"], "recall_at_1_train": recall_1["train"],
                         "recall_at_1_test": recall_1["test"], "train_localization_accuracy": best["best_accuracy"],
                         "best_threshold": best["best_threshold"], "reference_model": model_name(models[0]),
                         "accuracy_drop_vs_reference": reference.get(best["method"], float("nan"))
                         - best["best_accuracy"]})
    return frame("diagnosis", rows)


def write_diagnosis(run: Run, config, table: pd.DataFrame, results: dict[str, dict]) -> str:
    """``diagnosis.parquet`` and the manifest (naming each model's localization run) in the diagnosis run's
    folder; then the run is registered."""
    store = run.location
    store.write_table("diagnosis.parquet", "diagnosis", table)
    manifest = {"kind": "diagnose_models", "run": {"kind": run.kind, "run_id": run.run_id},
                "config": config.to_dict(), "versions": versions(), "git_commit": git_commit(),
                "localization_runs": {spec: result["location"] for spec, result in results.items()},
                "errors": sum(int(r["manifest"]["errors"]) for r in results.values()),
                "warnings": sum(int(r["manifest"]["warnings"]) for r in results.values())}
    store.write_json("manifest.json", manifest)
    headline = {f"drop/{r['model']}/{r['method']}": float(r["accuracy_drop_vs_reference"])
                for _, r in table.iterrows()}
    finish_run(run, manifest, dataset=config.dataset, model=",".join(config.models), headline=headline)
    return store.location_of("")


def diagnosis_markdown(table: pd.DataFrame, location: str) -> str:
    lines = ["# Model diagnosis", "", f"Results: `{location}`", "",
             "| model | method | R@1 train | R@1 test | train loc. acc. (%) | drop vs reference (points) |",
             "|---|---|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['model']} | {r['method']} | {r['recall_at_1_train'] * 100:.1f} | "
                     f"{r['recall_at_1_test'] * 100:.1f} | {r['train_localization_accuracy'] * 100:.1f} | "
                     f"{r['accuracy_drop_vs_reference'] * 100:+.1f} |")
    return "\n".join(lines)
