"""Model diagnosis (paper Tables III and IV): several checkpoints, Recall@1 on the training and the evaluation
split (the training and the unseen classes under the class rule) and training-split localization accuracy per
method, with the accuracy drop Multi-Similarity minus each other model (models named by their recorded loss)."""

from __future__ import annotations

import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.evaluate_localization import evaluate_localization
from tasks.configs import DiagnoseConfig, LocalizationConfig, as_config
from tasks.diagnosis import diagnosis_markdown, diagnosis_rows, write_diagnosis
from tasks.runs import start_run


@flow(name="diagnose_models", log_prints=True)
def diagnose_models(config: DiagnoseConfig) -> pd.DataFrame:
    config = as_config(DiagnoseConfig, config)
    config.check_inputs()
    run = start_run("diagnosis", config.out)
    results = {}
    for spec in config.models:  # each model's localization is a run of its own under the same results root
        # Table III: localization of the images the model trained on (the paper's random pairs, both sides)
        localization = LocalizationConfig(dataset=config.dataset, split_rule=config.split_rule, model=spec,
                                          out=config.out, methods=config.methods, splits=("train", "test"),
                                          localize_splits=("train",), shard_size=config.shard_size,
                                          device=config.device)
        results[spec] = evaluate_localization(localization)
    table = diagnosis_rows(config.models, results)
    location = write_diagnosis(run, config, table, results)
    create_table_artifact(key="model-diagnosis", table=table.to_dict("records"),
                          description="Recall@1 and train-set localization accuracy per model and method")
    create_markdown_artifact(key="model-diagnosis-report", markdown=diagnosis_markdown(table, location))
    return table
