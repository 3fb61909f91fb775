"""Study fixtures: a localization run and a retrieval run made from the embedded default data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

TINY = "tests.conftest:tiny"


@pytest.fixture(scope="session")
def localization_run(tiny_synthetic, tiny_synthetic_root, tmp_path_factory) -> Path:
    """A hand-made results run: one query-side row per same-class pair, the manifest naming data and model."""
    run = tmp_path_factory.mktemp("run")
    items = tiny_synthetic.items
    rows = []
    for item in items:
        partner = next(o for o in items if o.label == item.label and o.split == item.split and o is not item)
        rows.append({"pair_id": f"{item.image_id}-{partner.image_id}", "image_id": item.image_id,
                     "partner_id": partner.image_id, "side": "query"})
    pd.DataFrame(rows).to_parquet(run / "localization_items.parquet")
    (run / "manifest.json").write_text(json.dumps({"config": {"dataset": f"cub:{tiny_synthetic_root}"},
                                                   "checkpoint": {"spec": TINY}}))
    return run


def write_retrieval_run(run, tiny_synthetic, index_folder) -> None:
    """A retrieval run as `eml retrieve` writes one (its rankings table and the manifest fields studies read):
    the tiny model, the tiny data indexed, the upper half of each test image's object box as query region,
    labelled with the object's class (the label of the region's content)."""
    from eml_core.gallery_index import build_index
    from eml_core.models import model_from_spec
    from eml_core.region_retrieval import Region, RegionQuery, rank_queries
    from eml_core.results import ResultsLocation
    from eml_core.tables import frame

    model = model_from_spec(TINY)
    index, _, errors = build_index(index_folder, model, tiny_synthetic.items, tiny_synthetic.root)
    assert not errors
    queries = [RegionQuery(f"part-{i.image_id}", i.path, Region.box(x0, y0, x1, (y0 + y1) / 2), i.label)
               for i in tiny_synthetic.split("test") for x0, y0, x1, y1 in [i.box]]
    rows, errors = rank_queries(model, index, queries, methods=("partial_centre", "overall"), top_k=4)
    assert not errors
    store = ResultsLocation(str(run))
    store.write_table("retrieval_rankings.parquet", "retrieval_rankings", frame("retrieval_rankings", rows))
    store.write_json("manifest.json", {"kind": "interactive_retrieval", "index": {
        "location": str(index_folder), "root": str(index.root_folder()), "count": len(index)}})


@pytest.fixture(scope="session")
def retrieval_run(tiny_synthetic, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("retrieval")
    write_retrieval_run(folder / "run", tiny_synthetic, folder / "index")
    return folder / "run"


def write_definition(folder: Path, **fields) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


@pytest.fixture(scope="session")
def built_study(localization_run, tmp_path_factory) -> Path:
    """An overall_map study (decomposition vs gradcam), built once; tests copy it before changing it."""
    from amt.build import build_study
    from amt.study import load_study

    folder = tmp_path_factory.mktemp("study")
    definition = write_definition(folder, study_id="test-overall", kind="overall_map",
                                  methods=["decomposition", "gradcam"], source=str(localization_run), items=8,
                                  items_per_hit=5, assignments_per_hit=3, reward_usd=0.5, catch_trial_rate=0.25,
                                  budget_usd=20.0, seed=3, subject="object",
                                  stimuli={"bucket": "eml-stimuli", "prefix": "studies", "url_mode": "public"})
    build_study(load_study(definition), folder / "built")
    return folder / "built"


@pytest.fixture
def study_copy(built_study, tmp_path) -> Path:
    target = tmp_path / "study"
    shutil.copytree(built_study, target)
    return target
