"""Gallery index: fingerprints, build and append, a refused model, moved indexes, damaged files, search backends."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eml_core.datasets import Item, load_cub
from eml_core.gallery_index import (
    ExactSearch,
    GalleryIndex,
    GalleryIndexError,
    IndexModelMismatchError,
    IVFSearch,
    build_index,
    model_state_fingerprint,
    recall_against_exact,
)
from eml_core.models import load_model, save_model
from eml_core.retrieval import embed_items
from tests.conftest import tiny_model
from tests.hostile.harness import record


@pytest.fixture(scope="module")
def model():
    return tiny_model("gap_fc")


@pytest.fixture
def gallery(tiny_synthetic_root, tmp_path):
    """A private copy of the tiny embedded-default dataset (tests move and damage it)."""
    root = shutil.copytree(tiny_synthetic_root, tmp_path / "data" / "CUB_200_2011")
    return load_cub(root)


def test_fingerprint_follows_weights_and_structure_not_the_object(tmp_path, model):
    assert model_state_fingerprint(model) == model_state_fingerprint(tiny_model("gap_fc"))
    assert model_state_fingerprint(model) != model_state_fingerprint(tiny_model("gap_fc", seed=1))
    # GAP and GMP heads hold no weights at all: the module structure tells them apart
    assert model_state_fingerprint(tiny_model("gap")) != model_state_fingerprint(tiny_model("gmp"))
    save_model(model, tmp_path / "m.pt")
    assert model_state_fingerprint(load_model(tmp_path / "m.pt", factory="tests.conftest:tiny")) == \
        model_state_fingerprint(model)
    changed = tiny_model("gap_fc")
    with torch.no_grad():
        changed.head[-1].bias[0] += 1e-6
    assert model_state_fingerprint(changed) != model_state_fingerprint(model)


def test_index_stores_the_model_embeddings_with_ids_labels_and_relative_paths(tmp_path, gallery, model):
    index, added, errors = build_index(tmp_path / "index", model, gallery.items, gallery.root, dataset="tiny")
    assert added == len(gallery.items) == len(index) and not errors
    kept, direct, _ = embed_items(model, gallery.items)
    np.testing.assert_array_equal(index.embeddings, direct.numpy())  # raw E_g, not normalised
    assert list(index.rows["image_id"]) == [i.image_id for i in kept]
    assert list(index.rows["label"]) == [i.label for i in kept]
    # relative to the dataset root (a CUB item's own relative_path is relative to images/)
    assert list(index.rows["relative_path"]) == [f"images/{i.relative_path}" for i in kept]
    assert index.image_paths() == [i.path for i in kept]
    reopened = GalleryIndex.open(tmp_path / "index")
    assert reopened.header["dataset"] == "tiny" and reopened.header["embedding_dim"] == 5
    np.testing.assert_array_equal(reopened.embeddings, index.embeddings)


def test_appending_embeds_only_new_images_and_is_idempotent(tmp_path, gallery, model, monkeypatch):
    embedded = []
    import eml_core.retrieval as retrieval

    original = retrieval.embed_items

    def counting(model_, items, *args, **kwargs):
        embedded.extend(i.image_id for i in items)
        return original(model_, items, *args, **kwargs)

    monkeypatch.setattr(retrieval, "embed_items", counting)
    location = tmp_path / "index"
    build_index(location, model, gallery.items[:5], gallery.root)
    first_part = {p.name: p.read_bytes() for p in (location / "parts").iterdir()}
    assert embedded == [i.image_id for i in gallery.items[:5]]
    embedded.clear()
    index, added, _ = build_index(location, model, gallery.items, gallery.root)
    assert added == len(gallery.items) - 5 and embedded == [i.image_id for i in gallery.items[5:]]
    assert {name: (location / "parts" / name).read_bytes() for name in first_part} == first_part  # untouched
    header = (location / "index.json").read_bytes()
    embedded.clear()
    index, added, errors = build_index(location, model, gallery.items, gallery.root)
    assert added == 0 and embedded == [] and not errors
    assert (location / "index.json").read_bytes() == header  # nothing rewritten
    assert len(index) == len(gallery.items) and len(index.header["parts"]) == 2
    # committing the same parts again changes nothing either
    assert index.commit([dict(part, embedding_dim=5) for part in index.header["parts"]]) == 0
    assert (location / "index.json").read_bytes() == header


def test_an_index_refuses_another_model(tmp_path, gallery, model):
    index, _, _ = build_index(tmp_path / "index", model, gallery.items[:3], gallery.root)
    other = tiny_model("gap_fc", seed=7)
    with pytest.raises(IndexModelMismatchError, match="built with another model"):
        index.check_model(other)
    with pytest.raises(IndexModelMismatchError, match="fingerprint"):
        index.append(other, gallery.items)
    with pytest.raises(IndexModelMismatchError):
        GalleryIndex.create(tmp_path / "index", other, gallery.root)
    record("gallery index", "another model (check, append, create)", "clean_error")


def test_moved_indexes_still_resolve_paths(tmp_path, gallery, model):
    build_index(tmp_path / "index", model, gallery.items, gallery.root)
    expected = [i.path for i in gallery.items]
    # the index alone moves: the recorded absolute root still holds the images
    shutil.move(tmp_path / "index", tmp_path / "elsewhere" / "deeper" / "index")
    moved = GalleryIndex.open(tmp_path / "elsewhere" / "deeper" / "index")
    assert moved.image_paths() == expected
    # index and images move together (a copied project): the root relative to the index is used
    shutil.move(tmp_path / "elsewhere" / "deeper" / "index", tmp_path / "index")
    shutil.move(tmp_path, tmp_path.parent / (tmp_path.name + "_moved"))
    try:
        together = GalleryIndex.open(tmp_path.parent / (tmp_path.name + "_moved") / "index")
        paths = together.image_paths()
        assert all(p.startswith(str(tmp_path) + "_moved") for p in paths)
        assert [p.replace(str(tmp_path) + "_moved", str(tmp_path)) for p in paths] == expected
        assert all(os.path.isfile(p) for p in paths)
        # and an explicit root wins over both
        assert together.image_paths(root="/data/cub")[0] == "/data/cub/images/" + gallery.items[0].relative_path
    finally:
        shutil.move(tmp_path.parent / (tmp_path.name + "_moved"), tmp_path)


def test_bad_gallery_items_become_error_rows_and_are_retried_later(tmp_path, gallery, model):
    broken = gallery.items[2]
    original = Path(broken.path).read_bytes()
    Path(broken.path).write_bytes(b"not a png")
    outside = Item("outside", str(tmp_path / "elsewhere.png"), "elsewhere.png", 1, "test", None, (8, 8))
    index, added, errors = build_index(tmp_path / "index", model, [*gallery.items, outside], gallery.root)
    assert added == len(gallery.items) - 1
    problems = {e.item: e.problem for e in errors}
    assert "not a readable image" in problems[broken.image_id] or "corrupt" in problems[broken.image_id]
    assert "not inside the index root" in problems["outside"]
    Path(broken.path).write_bytes(original)
    index, added, errors = build_index(tmp_path / "index", model, gallery.items, gallery.root)
    assert added == 1 and not errors and len(index) == len(gallery.items)
    clash = Item(gallery.items[0].image_id, gallery.items[1].path.replace(".png", "_copy.png"), "x", 1, "test", None,
                 (8, 8))
    shutil.copy(gallery.items[1].path, clash.path)
    _, errors = index.append(model, [clash])
    assert "already names" in errors[0].problem
    for case in ("unreadable gallery image", "gallery image outside the root", "image id clash"):
        record("gallery index", case, "errors_row")


def test_damaged_indexes_are_refused_with_the_file_named(tmp_path, gallery, model):
    build_index(tmp_path / "index", model, gallery.items, gallery.root)
    part = next((tmp_path / "index" / "parts").glob("*.npy"))
    data = bytearray(part.read_bytes())
    data[-3] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(GalleryIndexError, match="do not match the SHA-256"):
        _ = GalleryIndex.open(tmp_path / "index").embeddings
    header = json.loads((tmp_path / "index" / "index.json").read_text())
    header["parts"][0]["key"] = "../../etc/passwd"
    (tmp_path / "index" / "index.json").write_text(json.dumps(header))
    with pytest.raises(GalleryIndexError, match="damaged index header"):
        GalleryIndex.open(tmp_path / "index")
    (tmp_path / "index" / "index.json").write_text("{not json")
    with pytest.raises(GalleryIndexError, match="no gallery index here"):
        GalleryIndex.open(tmp_path / "index")
    with pytest.raises(GalleryIndexError, match="no gallery index here"):
        GalleryIndex.open(tmp_path / "absent")
    for case in ("flipped byte in a part", "part key leaving the folder", "header not JSON", "no index"):
        record("gallery index", case, "clean_error")


def test_index_on_s3(s3_endpoint, gallery, model):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="indexes")
    index, added, _ = build_index("s3://indexes/tiny", model, gallery.items, gallery.root)
    assert added == len(gallery.items)
    reopened = GalleryIndex.open("s3://indexes/tiny")
    np.testing.assert_array_equal(reopened.embeddings, index.embeddings)
    assert reopened.header["root_from_index"] is None and reopened.image_paths()[0] == gallery.items[0].path
    assert build_index("s3://indexes/tiny", model, gallery.items, gallery.root)[1] == 0


# --- search ----------------------------------------------------------------------------------------


def _brute_force(gallery: np.ndarray, vector: np.ndarray, k: int, exclude=()) -> list[int]:
    scores = []
    for g, row in enumerate(gallery):
        norm = np.linalg.norm(row)
        scores.append((-(float(row @ vector) / norm if norm > 0 else 0.0), g))
    return [g for _, g in sorted(scores) if g not in exclude][:k]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_exact_search_matches_a_brute_force_loop(size, k, seed):
    rng = np.random.default_rng(seed)
    gallery = rng.standard_normal((size, 6)).astype(np.float32)
    gallery[rng.random(size) < 0.1] = 0  # zero-norm rows score 0
    gallery[-1] = gallery[0]  # an exact tie: broken by gallery index
    vector = rng.standard_normal(6).astype(np.float32)
    exclude = {int(rng.integers(size))}
    scores, indices = ExactSearch(gallery).search(vector, k, [exclude])
    expected = _brute_force(gallery, vector, k, exclude)
    found = [int(i) for i in indices[0] if i >= 0]
    assert len(found) == len(expected)
    # equal scores may swap places when float32 rounding differs between the two computations
    unit = np.where(np.linalg.norm(gallery, axis=1, keepdims=True) > 0,
                    gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-30), 0)
    np.testing.assert_allclose(unit[found] @ vector, unit[expected] @ vector, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores[0][:len(found)], unit[found] @ vector, rtol=1e-5, atol=1e-6)
    full_scores, order = ExactSearch(gallery).rank(vector)
    assert sorted(order[0].tolist()) == list(range(size)) and np.all(np.diff(full_scores[0]) <= 1e-7)


def test_exact_search_dot_similarity_ties_and_missing_slots():
    gallery = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]], np.float32)
    scores, indices = ExactSearch(gallery, "dot").search([1.0, 0.0], 5)
    assert indices.tolist() == [[0, 1, 2]] and scores[0].tolist() == [2.0, 1.0, 0.0]
    scores, indices = ExactSearch(gallery, "cosine").search([1.0, 0.0], 2)
    assert indices.tolist() == [[0, 1]] and scores[0].tolist() == [1.0, 1.0]  # tie kept in gallery order
    scores, indices = ExactSearch(gallery).search([1.0, 0.0], 3, [{0, 1}])
    assert indices.tolist() == [[2, -1, -1]] and np.isnan(scores[0, 1:]).all()
    with pytest.raises(Exception, match=r"expected \(Q, 2\)"):
        ExactSearch(gallery).search(np.ones(3), 1)


def test_ivf_probing_every_cell_is_exact_and_recall_is_measured(tmp_path, gallery, model):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((400, 8)).astype(np.float32)
    queries = rng.standard_normal((10, 8)).astype(np.float32)
    _, exact = ExactSearch(data).search(queries, 10)
    ivf = IVFSearch(data, nlist=8, nprobe=8)
    _, found = ivf.search(queries, 10)
    assert recall_against_exact(found, exact, 10) == 1.0
    ivf.nprobe = 1
    _, few = ivf.search(queries, 10)
    assert 0 < recall_against_exact(few, exact, 10) < 1.0
    assert recall_against_exact(np.array([[1, 2, -1]]), np.array([[2, 3, 4]]), 3) == pytest.approx(1 / 3)
    # built part by part from an index, it finds the exact neighbours too
    index, _, _ = build_index(tmp_path / "index", model, gallery.items, gallery.root, shard_size=5)
    streamed = IVFSearch.from_index(index, nlist=2, nprobe=2)
    vectors = index.embeddings[:3] / np.linalg.norm(index.embeddings[:3], axis=1, keepdims=True)
    assert recall_against_exact(streamed.search(vectors, 5)[1], index.searcher("cpu").search(vectors, 5)[1], 5) == 1.0


def test_a_folder_dataset_and_the_faces_sample_index_like_any_other(tmp_path, model):
    from eml_core.dataset_specs import dataset_from_spec
    from tests.conftest import shared_data

    (tmp_path / "pictures" / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["image,label,split,x,y,width,height"]
    for n in range(4):
        from PIL import Image

        Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "pictures" / "a" / f"{n}.png")
        lines.append(f"a/{n}.png,{n % 2},test,,,,")
    (tmp_path / "pictures" / "annotations.csv").write_text("\n".join(lines) + "\n")
    folder = dataset_from_spec(f"folder:{tmp_path / 'pictures'}")
    index, added, errors = build_index(tmp_path / "index", model, folder.items, folder.root)
    assert added == 4 and not errors and list(index.rows["relative_path"]) == [f"a/{n}.png" for n in range(4)]
    assert list(index.rows["label"]) == [0, 1, 0, 1] and index.rows["camera"].isna().all()
    faces = dataset_from_spec(f"faces:{shared_data('faces')}")
    index, added, errors = build_index(tmp_path / "faces", model, faces.items[:6], faces.root)
    assert added == 6 and not errors and index.rows["relative_path"].str.startswith("images/").all()
