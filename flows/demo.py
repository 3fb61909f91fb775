"""The main job on the embedded default data, as one Prefect flow: explain an example pair, generate the
default dataset, train the default model, evaluate localization (Tables I and II), and build the example
human study against that run (built, not launched); then train a small two-branch cross-view model and evaluate
orientation (paper Section VII-A, Fig. 9); then retrieve by region: index the embedded data with the trained
model, rank query regions of two-object images by partial similarity and the baselines; last, check the maps'
faithfulness to the similarity and their sanity under model randomization on two pairs of the localization run."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.evaluate_faithfulness import evaluate_faithfulness
from flows.evaluate_localization import evaluate_localization
from flows.evaluate_orientation import evaluate_orientation
from flows.index_build import index_build
from flows.interactive_retrieval import interactive_retrieval
from flows.train import train
from flows.train_crossview import train_crossview
from tasks.configs import (
    CrossViewTrainConfig,
    DemoConfig,
    ExplainConfig,
    FaithfulnessConfig,
    IndexBuildConfig,
    LocalizationConfig,
    OrientationConfig,
    RetrievalConfig,
    TrainConfig,
    as_config,
)
from tasks.demo import (
    DEMO_CROSSVIEW_TRAINING,
    DEMO_STUDY,
    EXAMPLE_POINTS,
    embedded_crossview_pairs,
    embedded_dataset,
    example_pair,
    retrieval_queries,
)
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
    result = {"explanation": explanation, "dataset": dataset, "training": trained, "localization": localization,
              "study": study, "out": str(out)}

    # cross-view orientation (paper Section VII-A, Fig. 9): train a small two-branch model, then evaluate it
    crossview = f"cvusa:{embedded_crossview_pairs(str(out / 'crossview' / 'data'))}"
    crossview_model = str(out / "crossview.pt")
    result["crossview_training"] = train_crossview(CrossViewTrainConfig(dataset=crossview, checkpoint=crossview_model,
                                                                        training=DEMO_CROSSVIEW_TRAINING))
    result["orientation"] = evaluate_orientation(OrientationConfig(dataset=crossview, model=crossview_model,
                                                                   out=str(out), random_rotations=2, examples=1))

    # interactive retrieval by region (paper Section VII-B): index every image of the embedded data (the class
    # split puts half the classes in each split; the query regions mark objects of all 12 classes), then rank
    # two-object query regions
    gallery = index_build(IndexBuildConfig(gallery="synthetic", model=checkpoint, out=str(out / "index")))
    queries = retrieval_queries(str(out / "retrieval_queries"))
    result["index"] = gallery
    result["retrieval"] = interactive_retrieval(RetrievalConfig(index=gallery["index"], queries=queries, out=str(out),
                                                                montages=6))

    # small on purpose: 2 pairs of the localization run, 5 steps, one removal; the full protocol is a template
    result["faithfulness"] = evaluate_faithfulness(FaithfulnessConfig(
        dataset="synthetic", model=checkpoint, out=str(out), localization_run=localization["location"], pairs=2,
        steps=(0.0, 0.1, 0.3, 0.6, 1.0), points_per_pair=1))
    return result
