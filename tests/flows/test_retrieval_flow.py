"""The index_build, interactive_retrieval and evaluate_retrieval flows on tiny data, under one Prefect harness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from eml_core.gallery_index import GalleryIndex
from eml_core.region_retrieval import Region, RegionQuery
from eml_core.results import resolve_run
from eml_core.retrieval_queries import write_queries
from eml_core.tables import SCHEMAS
from tasks.runs import read_catalog

TINY = "tests.conftest:tiny"


def _build(gallery: str, out, **options) -> dict:
    from flows.index_build import index_build
    from tasks.configs import IndexBuildConfig

    return index_build(IndexBuildConfig(gallery=gallery, model=TINY, out=str(out), shard_size=4, device="cpu",
                                        **options))


def _retrieve(index, out, **options) -> dict:
    from flows.interactive_retrieval import interactive_retrieval
    from tasks.configs import RetrievalConfig

    return interactive_retrieval(RetrievalConfig(index=str(index), out=str(out), device="cpu", **options))


def _part_queries(items) -> list[RegionQuery]:
    """The upper half of each test image's object box: a part of the object, labelled with its class."""
    queries = []
    for item in items:
        x0, y0, x1, y1 = item.box
        queries.append(RegionQuery(f"part-{item.image_id}", item.path, Region.box(x0, y0, x1, (y0 + y1) / 2),
                                   item.label))
    return queries


@pytest.fixture(scope="module")
def built_index(prefect_harness, tiny_synthetic_root, tmp_path_factory):
    """An index of the tiny data's train split, then appended with everything (the test split is new)."""
    folder = tmp_path_factory.mktemp("index")
    first = _build(f"cub:{tiny_synthetic_root}", folder / "index", splits=("train",))
    second = _build(f"cub:{tiny_synthetic_root}", folder / "index")
    return folder / "index", first, second


def test_building_twice_embeds_only_what_is_new(built_index, tiny_synthetic, tiny_synthetic_root, monkeypatch):
    location, first, second = built_index
    train = tiny_synthetic.split("train")
    assert first["added"] == first["count"] == len(train)
    assert second["added"] == len(tiny_synthetic.items) - len(train) and second["count"] == len(tiny_synthetic.items)
    index = GalleryIndex.open(location)
    assert sorted(index.rows["relative_path"]) == sorted(f"images/{i.relative_path}" for i in tiny_synthetic.items)
    assert index.header["model"]["spec"] == TINY
    builds = sorted((location / "builds").iterdir())
    assert len(builds) == 2 and all((b / "manifest.json").is_file() and (b / "errors.parquet").is_file()
                                    for b in builds)

    import tasks.retrieval as retrieval_tasks

    calls = []
    real = retrieval_tasks.embed_gallery_shard
    monkeypatch.setattr(retrieval_tasks, "embed_gallery_shard", lambda *a, **k: calls.append(1) or real(*a, **k))
    header_before = (location / "index.json").read_bytes()
    again = _build(f"cub:{tiny_synthetic_root}", location)
    assert again["added"] == 0 and again["count"] == len(tiny_synthetic.items) and calls == []
    assert (location / "index.json").read_bytes() == header_before  # nothing rewritten


def test_a_run_writes_rankings_scores_montages_manifest_and_catalog(built_index, tiny_synthetic, tmp_path):
    location, _, _ = built_index
    queries = _part_queries(tiny_synthetic.split("test")[:4])
    query_file = write_queries(tmp_path / "queries" / "queries.csv", queries)
    result = _retrieve(location, tmp_path / "results", queries=str(query_file), k=3, montages=2)

    run = resolve_run(str(tmp_path / "results"), "retrieval")
    assert Path(run.uri).parent == tmp_path / "results" / "retrieval" and Path(run.uri).name == result["run_id"]
    tables = {name: run.read_table(f"{name}.parquet") for name in
              ("retrieval_rankings", "retrieval_query_eval", "retrieval_eval", "errors")}
    for name, table in tables.items():
        assert list(table.columns) == SCHEMAS[name].names, name
    rankings = tables["retrieval_rankings"]
    assert len(rankings) == 4 * 5 * 3  # 4 box queries x every method x top 3
    assert list(dict.fromkeys(rankings["query_id"])) == [q.query_id for q in queries]  # the file's order
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in rankings["query_image"])
    own = {q.query_id: q.image for q in queries}
    assert not any(row.gallery_image == own[row.query_id] for row in rankings.itertuples())  # never itself
    evals = tables["retrieval_eval"]
    assert set(evals["benchmark"]) == {"labels"} and set(evals["method"]) == set(rankings["method"])
    assert (evals[evals["metric"] == "map"]["count"] == 4).all()
    aps = tables["retrieval_query_eval"].query("metric == 'ap'")
    means = aps.groupby("method")["value"].mean()
    for row in evals[evals["metric"] == "map"].itertuples():
        assert row.value == pytest.approx(means[row.method])

    manifest = run.read_json("manifest.json")
    assert manifest["index"]["root"] == str(Path(tiny_synthetic.root).resolve())
    assert manifest["queries"] == {"file": str(query_file.resolve()), "given": 4, "ranked": 4, "scored_by_label": 4}
    assert len(manifest["montages"]) == 2
    for relative in manifest["montages"].values():
        assert (Path(run.uri) / relative).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    catalog = read_catalog(str(tmp_path / "results"))
    row = catalog[catalog["run_id"] == result["run_id"]].iloc[0]
    headline = json.loads(row["headline"])
    assert row["kind"] == "retrieval" and headline["map/partial_centre"] == pytest.approx(
        float(evals.query("metric == 'map' and method == 'partial_centre'")["value"].iloc[0]))
    assert json.loads((tmp_path / "results" / "retrieval" / "latest.json").read_text())["run_id"] == result["run_id"]

    again = _retrieve(location, tmp_path / "results", queries=str(query_file), k=3, montages=2)
    assert again["manifest"]["shards_computed_this_run"] == 0  # rankings resumed from the shard cache
    pd.testing.assert_frame_equal(again["rankings"], result["rankings"])


def test_bad_query_rows_are_error_rows_and_the_rest_is_ranked(built_index, tiny_synthetic, tmp_path):
    location, _, _ = built_index
    good = tiny_synthetic.split("test")[0]
    lines = ["query_id,image,x0,y0,x1,y1,x,y,label",
             f"ok,{good.path},2,2,20,20,,,{good.label}",
             f"point,{good.path},,,,,5,6,",
             f"outside,{good.path},0,0,5000,20,,,",
             "missing,no/such/image.png,0,0,5,5,,,",
             f"both,{good.path},0,0,5,5,1,1,",
             f"nan,{good.path},0,0,nan,5,,,",
             f"ok,{good.path},1,1,9,9,,,"]
    (tmp_path / "q.csv").write_text("\n".join(lines) + "\n")
    result = _retrieve(location, tmp_path / "out", queries=str(tmp_path / "q.csv"), k=2)
    assert set(result["rankings"]["query_id"]) == {"ok", "point"}
    point = result["rankings"][result["rankings"]["query_id"] == "point"]
    assert set(point["method"]) == {"partial_centre", "overall"}  # the methods that apply to a point
    errors = result["errors"]
    problems = dict(zip(errors["item"], errors["problem"], strict=True))
    assert "not inside" in problems["outside"]
    assert errors[errors["item"] == "missing"].iloc[0]["file"].endswith("no/such/image.png")
    assert "both a box" in problems["both"] and "finite" in problems["nan"] and "repeated" in problems["ok"]
    assert result["manifest"]["errors"] == 5


def test_a_moved_index_finds_its_images_and_the_run_records_where(built_index, tiny_synthetic_root, tmp_path):
    """Index and images moved together (their relative layout kept): the root recorded relative to the index is
    used; the index moved alone: the recorded absolute root."""
    location, _, _ = built_index
    images = Path(tiny_synthetic_root)
    moved = tmp_path / "moved"
    shutil.copytree(images.parent, moved / images.parent.name)
    shutil.copytree(location.parent, moved / location.parent.name)
    moved_root = moved / images.parent.name / images.name
    moved_index = moved / location.parent.name / location.name
    image = str(moved_root / GalleryIndex.open(moved_index).rows["relative_path"].iloc[0])
    result = _retrieve(moved_index, tmp_path / "out", query=image, point=(8.0, 8.0), k=2)
    assert all(p.startswith(str(moved_root) + "/") for p in result["rankings"]["gallery_image"])
    assert result["manifest"]["index"]["root"] == str(moved_root)
    assert image not in set(result["rankings"]["gallery_image"])  # its own moved file is still excluded

    alone = tmp_path / "elsewhere" / "deeper" / "index"
    shutil.copytree(location, alone)
    result = _retrieve(alone, tmp_path / "out", query=image, point=(8.0, 8.0), k=2)
    assert result["manifest"]["index"]["root"] == str(images)
    assert all(p.startswith(str(images) + "/") for p in result["rankings"]["gallery_image"])


def test_the_composite_benchmark_flow(prefect_harness, tmp_path):
    from flows.evaluate_retrieval import evaluate_retrieval
    from tasks.configs import RetrievalBenchmarkConfig

    config = RetrievalBenchmarkConfig(model=TINY, out=str(tmp_path / "bench"), data=str(tmp_path / "data"),
                                      gallery_images=6, query_images=2, montages=1, device="cpu")
    result = evaluate_retrieval(config)
    evals = result["eval"]
    assert set(evals["method"]) == {"partial_centre", "partial_box_mean", "overall", "crop", "mask"}
    assert (evals[evals["metric"] == "map"]["count"] == 4).all()  # 2 query images x 2 regions
    run = resolve_run(str(tmp_path / "bench"), "retrieval_benchmark")
    assert run.read_json("manifest.json")["index"]["added_this_run"] == 6
    again = evaluate_retrieval(config)
    assert again["manifest"]["index"]["added_this_run"] == 0  # the index is reused
    pd.testing.assert_frame_equal(again["eval"], evals)


def test_a_run_on_s3_is_what_a_study_reads(built_index, tiny_synthetic, s3_endpoint, tmp_path):
    import boto3

    from amt.build import read_rankings
    from amt.study import study_from_dict

    boto3.client("s3").create_bucket(Bucket="eml-retrieval")
    location, _, _ = built_index
    query_file = write_queries(tmp_path / "queries.csv", _part_queries(tiny_synthetic.split("test")[:2]))
    result = _retrieve(location, "s3://eml-retrieval/results", queries=str(query_file), k=2, montages=1)
    run = resolve_run("s3://eml-retrieval/results", "retrieval")
    assert run.uri == result["location"] and run.exists(next(iter(result["manifest"]["montages"].values())))
    study = study_from_dict({"study_id": "s3-run", "kind": "retrieval", "methods": ["partial_centre", "overall"],
                             "source": "s3://eml-retrieval/results", "items": 2, "items_per_hit": 2}, "study.yaml")
    table = read_rankings(study)
    assert len(table) == len(result["rankings"]) and all(Path(p).is_file() for p in table["gallery_image"])


def test_the_retrieval_deployments_are_declared_with_valid_configs():
    import yaml

    from tasks.configs import IndexBuildConfig, RetrievalBenchmarkConfig, RetrievalConfig
    from tests.flows.test_deployments import LOCAL_CONFIGURATION, _deployed

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    # as `prefect deploy` fills them from the local configuration (docs/deployments.md)
    deployments = {d["name"]: _deployed(d, LOCAL_CONFIGURATION) for d in spec["deployments"]}
    for name, config_class in (("index-gallery", IndexBuildConfig), ("interactive-retrieval", RetrievalConfig),
                               ("nightly-retrieval-benchmark", RetrievalBenchmarkConfig)):
        config = config_class(**deployments[name]["parameters"]["config"])
        assert deployments[name]["work_pool"]["name"] == "gpu-pool" and config.device == "auto"
