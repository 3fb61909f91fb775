"""The main job on the embedded default data, as one Prefect flow: explain an example pair, generate the
default dataset, train the default model, evaluate localization (Tables I and II), build the example
human study against that run (built, not launched), and retrieve by region: index the test split with the
trained model, rank query regions of two-object images by partial similarity and the baselines."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.evaluate_localization import evaluate_localization
from flows.index_build import index_build
from flows.interactive_retrieval import interactive_retrieval
from flows.train import train
from tasks.configs import (
    DemoConfig,
    ExplainConfig,
    IndexBuildConfig,
    LocalizationConfig,
    RetrievalConfig,
    TrainConfig,
    as_config,
)
from tasks.demo import DEMO_STUDY, EXAMPLE_POINTS, embedded_dataset, example_pair, retrieval_queries
from tasks.explain import explain
from tasks.studies import build


@flow(name="demo", log_prints=True)
def demo(config: DemoConfig = DemoConfig()) -> dict:
    config = as_config(DemoConfig, config)
    config.check_inputs()
    out = Path(config.out)
    query, retrieved = example_pair(str(out / "explain" / "inputs"))
    explanation = explain(ExplainConfig(query=query, retrieved=retrieved, model=config.explain_model,
                                        out=str(out / "explain"), point_query=EXAMPLE_POINTS["query"],
                                        point_retrieved=EXAMPLE_POINTS["retrieved"]))
    dataset = embedded_dataset()
    checkpoint = str(out / "model.pt")
    trained = train(TrainConfig(dataset="synthetic", checkpoint=checkpoint))
    localization = evaluate_localization(LocalizationConfig(dataset="synthetic", model=checkpoint,
                                                            out=str(out)))
    study = build(str(DEMO_STUDY), str(out / "study"), source=localization["location"])
    gallery = index_build(IndexBuildConfig(gallery="synthetic", splits=("test",), model=checkpoint,
                                           out=str(out / "index")))
    queries = retrieval_queries(str(out / "retrieval_queries"))
    retrieval = interactive_retrieval(RetrievalConfig(index=gallery["index"], queries=queries, out=str(out),
                                                      montages=6))
    return {"explanation": explanation, "dataset": dataset, "training": trained, "localization": localization,
            "study": study, "index": gallery, "retrieval": retrieval, "out": str(out)}
