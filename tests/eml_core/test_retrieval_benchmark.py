"""Retrieval benchmarks: metrics against brute-force loops, Market-1501's rules by hand and on the real sample,
the composite images, and the documented benchmark commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from eml_core.errors import EmlError
from eml_core.gallery_index import build_index
from eml_core.identity_datasets import load_market1501
from eml_core.region_retrieval import query_vectors
from eml_core.retrieval_benchmark import (
    CompositeConfig,
    average_precision,
    ensure_composites,
    evaluate_composites,
    evaluate_market1501,
    generate_composites,
    load_composites,
    precision_at_k,
    reid_evaluation,
)
from tests.conftest import shared_data, tiny_model
from tests.hostile.harness import record

REPOSITORY = Path(__file__).resolve().parents[2]


def _brute_force_ap(relevance, total_relevant):
    hits, precisions = 0, []
    for rank, relevant in enumerate(relevance, start=1):
        if relevant:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / total_relevant if total_relevant else float("nan")


def test_metrics_golden_values():
    relevance = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)
    np.testing.assert_allclose(precision_at_k(relevance, 1), [1, 0, 0])
    np.testing.assert_allclose(precision_at_k(relevance, 4), [0.5, 0.25, 0])
    ap = average_precision(relevance, [2, 3, 0])
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert ap[1] == pytest.approx((1 / 4) / 3)  # two relevant images never ranked: they count as missed
    assert np.isnan(ap[2])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_average_precision_matches_a_brute_force_loop(queries, length, seed):
    rng = np.random.default_rng(seed)
    relevance = rng.random((queries, length)) < rng.random()
    counts = relevance.sum(1) + rng.integers(0, 3, queries)
    expected = [_brute_force_ap(row, count) for row, count in zip(relevance, counts, strict=False)]
    np.testing.assert_allclose(average_precision(relevance, counts), expected, rtol=1e-12)


def test_reid_rules_by_hand():
    angles = np.radians([0, 5, 10, 20, 60, 80, 85])
    gallery = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    pids = [1, -1, 0, 1, 2, 1, 3]
    cameras = [1, 2, 3, 2, 2, 3, 1]
    # query 1 (camera 1): g0 same person same camera -> ignored, g1 junk -> ignored, g2 distractor -> wrong,
    # g3 right, g4 wrong, g5 right, g6 wrong. Query 3 (camera 1): its only match g6 is from its own camera -> skipped.
    queries = np.array([[1, 0], [1, 0]], np.float32)
    result = reid_evaluation(queries, [1, 3], [1, 1], gallery, pids, cameras, ks=(1, 2, 5))
    assert result["cmc"] == {1: 0.0, 2: 1.0, 5: 1.0}
    assert result["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert (result["queries"], result["skipped"]) == (1, 1)


def _brute_force_reid(query_embeddings, query_items, gallery_embeddings, gallery_pids, gallery_cameras):
    rank1, aps = [], []
    unit_g = gallery_embeddings / np.linalg.norm(gallery_embeddings, axis=1, keepdims=True)
    for vector, item in zip(query_embeddings, query_items, strict=False):
        scored = []
        for g, (pid, camera) in enumerate(zip(gallery_pids, gallery_cameras, strict=False)):
            if pid == -1 or (pid == item.label and camera == item.camera):
                continue
            scored.append((-float(unit_g[g] @ vector / np.linalg.norm(vector)), g, pid == item.label))
        relevance = [relevant for _, _, relevant in sorted(scored)]
        if not any(relevance):
            continue
        rank1.append(relevance[0])
        aps.append(_brute_force_ap(relevance, sum(relevance)))
    return float(np.mean(rank1)), float(np.mean(aps)), len(aps)


def test_market1501_sample_with_the_benchmark_rules(tmp_path):
    from eml_core.retrieval import embed_items

    dataset = load_market1501(shared_data("market1501"))
    model = tiny_model("gap_fc", input_size=(32, 16))
    index, _, errors = build_index(tmp_path / "index", model, dataset.split("gallery"), dataset.root)
    assert not errors and len(index) == 32
    rows, result, errors = evaluate_market1501(model, dataset.split("query"), index)
    assert not errors
    # two queries see their person only under their own camera (test_identity_datasets): skipped, as the rules say
    assert (result["queries"], result["skipped"]) == (30, 2)
    kept, embeddings, _ = embed_items(model, dataset.split("query"))
    rank1, mean_ap, count = _brute_force_reid(embeddings.numpy(), kept, index.embeddings,
                                              index.rows["label"].to_numpy(), index.rows["camera"].to_numpy())
    assert count == 30 and result["cmc"][1] == pytest.approx(rank1) and result["map"] == pytest.approx(mean_ap)
    assert {(r["metric"], r["k"]) for r in rows} == {("cmc", 1), ("cmc", 5), ("cmc", 10), ("map", None)}


@pytest.fixture(scope="module")
def composites(tmp_path_factory):
    folder = tmp_path_factory.mktemp("composites")
    return ensure_composites(folder, CompositeConfig(gallery_images=16, query_images=3, classes=4, seed=5))


def test_composites_hold_two_objects_at_known_boxes(composites, tmp_path):
    benchmark = load_composites(composites)
    assert len(benchmark.gallery) == 16 and len(benchmark.queries) == 3
    for image in benchmark.gallery + benchmark.queries:
        height, width = image.size
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = image.boxes
        assert image.classes[0] != image.classes[1] and all(1 <= c <= 4 for c in image.classes)
        assert 0 <= ax0 < ax1 <= width // 2 <= bx0 < bx1 <= width and 0 <= ay0 < ay1 <= height
        assert 0 <= by0 < by1 <= height
        # the object is drawn at its box: its pixels differ from the canvas just outside it
        pixels = np.asarray(Image.open(image.path), dtype=np.float32)
        inside = pixels[int(ay0):int(ay1), int(ax0):int(ax1)]
        assert inside.std() > 1
    queries = benchmark.region_queries()
    assert len(queries) == 6 and queries[0].label == benchmark.queries[0].classes[0]
    assert queries[1].region.box_xyxy == benchmark.queries[0].boxes[1]
    # deterministic, and reused when the config is the same
    again = generate_composites(tmp_path, CompositeConfig(gallery_images=16, query_images=3, classes=4, seed=5))
    first = (composites / "images" / "gallery_0003.png").read_bytes()
    assert (again / "images" / "gallery_0003.png").read_bytes() == first
    stamp = (composites / "generator.json").stat().st_mtime_ns
    ensure_composites(composites.parent, CompositeConfig(gallery_images=16, query_images=3, classes=4, seed=5))
    assert (composites / "generator.json").stat().st_mtime_ns == stamp


def test_a_tampered_composite_index_is_refused(composites, tmp_path):
    copy = shutil.copytree(composites, tmp_path / "composites")
    lines = (copy / "composites.csv").read_text().splitlines()
    lines[2] = lines[2].replace("images/", "../../")
    (copy / "composites.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(EmlError, match="line 3"):
        load_composites(copy)
    with pytest.raises(EmlError, match="missing"):
        load_composites(tmp_path)
    record("load_composites", "path leaving the folder; missing index", "clean_error")


def test_composite_metrics_match_a_brute_force_evaluation(composites, tmp_path):
    benchmark = load_composites(composites)
    model = tiny_model("gap_fc", input_size=(32, 64))
    index, _, _ = build_index(tmp_path / "index", model, benchmark.gallery_items(), benchmark.root)
    rankings, evals, errors = evaluate_composites(model, index, benchmark, top_k=5)
    assert not errors and len(rankings) == 6 * 5 * 5
    vectors, _ = query_vectors(model, benchmark.region_queries())
    contents = benchmark.contents()
    unit = index.embeddings / np.linalg.norm(index.embeddings, axis=1, keepdims=True)
    ids = list(index.rows["image_id"])
    values = {(r["method"], r["metric"], r["k"]): r["value"] for r in evals}
    for method in ("partial_centre", "partial_box_mean", "overall", "crop", "mask"):
        precision = {1: [], 5: [], 10: []}
        aps = []
        for qv in vectors:
            order = sorted(range(len(ids)), key=lambda g: (-float(unit[g] @ qv.vectors[method]), g))
            relevance = [qv.query.label in contents[ids[g]] for g in order]
            for k in precision:
                precision[k].append(sum(relevance[:k]) / k)
            aps.append(_brute_force_ap(relevance, sum(relevance)))
        for k, found in precision.items():
            assert values[(method, "precision", k)] == pytest.approx(np.mean(found))
        assert values[(method, "map", None)] == pytest.approx(np.mean(aps))


DOC_COMMANDS = (
    ".venv/bin/python benchmarks/bench_retrieval.py latency --sizes 1000,10000 --queries 2 --repeats 1 --threads 1",
    ".venv/bin/python benchmarks/bench_retrieval.py composite --model tests.conftest:tiny --gallery 12 --queries 2 "
    "--out runs/retrieval_smoke",
)


@pytest.mark.parametrize("command", DOC_COMMANDS)
def test_documented_benchmark_commands_run_as_written(command):
    assert command in " ".join((REPOSITORY / "docs" / "retrieval.md").read_text().split())
    argv = command.split()
    argv[0] = sys.executable if not (REPOSITORY / argv[0]).exists() else argv[0]
    try:
        done = subprocess.run(argv, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        if "latency" in command:
            assert "G=   10,000" in done.stdout and "recall@10 vs exact" in done.stdout
        else:
            assert "composite    partial_centre" in done.stdout
            assert (REPOSITORY / "runs" / "retrieval_smoke" / "retrieval_eval.parquet").is_file()
            assert list((REPOSITORY / "runs" / "retrieval_smoke" / "montages").glob("*.png"))
    finally:
        shutil.rmtree(REPOSITORY / "runs" / "retrieval_smoke", ignore_errors=True)
