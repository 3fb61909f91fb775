"""Market-1501 and face identity loaders: the real samples, the benchmark's special ids, bad names and files."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from eml_core.dataset_specs import check_dataset_spec, dataset_from_spec
from eml_core.datasets import DatasetError
from eml_core.identity_datasets import IdentityItem, load_faces, load_market1501, market1501_root, parse_market_name
from tests.conftest import shared_data
from tests.hostile.harness import record


def test_real_market1501_sample_loads_completely():
    dataset = load_market1501(shared_data("market1501"))
    assert dataset.root.endswith("Market-1501-v15.09.15")  # found inside the folder holding it
    assert not dataset.errors
    assert Counter(i.split for i in dataset.items) == {"train": 32, "query": 32, "gallery": 32}
    assert all(isinstance(i, IdentityItem) and 1 <= i.camera <= 6 and i.size == (128, 64) for i in dataset.items)
    first = dataset.items[0]
    assert (first.image_id, first.relative_path, first.label, first.camera, first.frame, first.subset) == (
        "bounding_box_train/0002_c1s1_069056_02", "bounding_box_train/0002_c1s1_069056_02.jpg", 2, 1, 69056,
        "bounding_box_train")
    # two queries have their person in the gallery only under their own camera: the benchmark's rules will
    # leave them without a true match (tests/eml_core/test_retrieval_benchmark.py counts them as skipped)
    gallery = {(i.label, i.camera) for i in dataset.split("gallery")}
    same_camera_only = [q.image_id for q in dataset.split("query")
                        if not any(pid == q.label and camera != q.camera for pid, camera in gallery)]
    assert same_camera_only == ["query/0013_c5s1_000426_00", "query/0016_c6s1_011151_00"]
    assert sorted({i.label for i in dataset.split("query")}) == sorted({i.label for i in dataset.split("gallery")})


def test_market_file_names():
    assert parse_market_name("0002_c1s1_069056_02.jpg") == {"pid": 2, "camera": 1, "sequence": 1, "frame": 69056,
                                                             "box": 2}
    assert parse_market_name("-1_c3s2_000101_01.jpg")["pid"] == -1
    assert parse_market_name("0000_c6s4_002452_02.jpg")["pid"] == 0
    for bad in ("0002_c1_069056_02.jpg", "2_c1s1_069056_02.jpg", "0002_c1s1_069056_02.txt", "Thumbs.db"):
        assert parse_market_name(bad) is None, bad


def _jpeg(path, value=100, size=(128, 64)):
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def test_market_special_ids_and_bad_files_are_handled_as_the_benchmark_does(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    for folder in ("query", "bounding_box_test"):
        (root / folder).mkdir(parents=True)
    _jpeg(root / "query" / "0007_c1s1_000100_00.jpg")
    _jpeg(root / "query" / "-1_c2s1_000100_00.jpg")                     # a junk query: no true match
    _jpeg(root / "bounding_box_test" / "0007_c2s1_000200_01.jpg")
    _jpeg(root / "bounding_box_test" / "-1_c1s1_000300_01.jpg")         # junk: kept in the gallery, label -1
    _jpeg(root / "bounding_box_test" / "0000_c3s1_000400_01.jpg")       # distractor: kept, label 0
    _jpeg(root / "bounding_box_test" / "0007_c9s1_000500_01.jpg")       # no camera 9
    _jpeg(root / "bounding_box_test" / "person.jpg")                    # an image with a foreign name
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0" * 10)  # as in the official zip
    (root / "bounding_box_test" / "0008_c1s1_000600_01.jpg").write_bytes(b"not a jpeg")
    dataset = load_market1501(tmp_path)
    assert [i.image_id for i in dataset.items] == [
        "query/0007_c1s1_000100_00", "bounding_box_test/-1_c1s1_000300_01", "bounding_box_test/0000_c3s1_000400_01",
        "bounding_box_test/0007_c2s1_000200_01"]
    junk, distractor = dataset.items[1], dataset.items[2]
    assert junk.is_junk and junk.label == -1 and not junk.is_distractor
    assert distractor.is_distractor and distractor.label == 0
    problems = {e.file.rsplit("/", 1)[-1]: e for e in dataset.errors}
    assert "junk id -1 has no true match" in problems["-1_c2s1_000100_00.jpg"].problem
    assert "camera 9" in problems["0007_c9s1_000500_01.jpg"].problem
    assert "does not follow" in problems["person.jpg"].problem and problems["person.jpg"].severity == "error"
    assert problems["Thumbs.db"].severity == "warning"
    assert "not a readable image" in problems["0008_c1s1_000600_01.jpg"].problem
    assert any(e.file.endswith("bounding_box_train") and "missing" in e.problem for e in dataset.errors)
    for case in problems:
        record("load_market1501", case, "errors_row")


def test_market_without_any_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no Market-1501 folder"):
        load_market1501(tmp_path)
    record("load_market1501", "folder without Market-1501 subsets", "clean_error")
    assert market1501_root(tmp_path / "absent") == tmp_path / "absent"


def test_real_faces_sample_loads_completely():
    dataset = load_faces(shared_data("faces"))
    assert not dataset.errors
    assert len(dataset.items) == 61 and len(dataset.labels) == 13
    assert dataset.class_names[1] == "id00" and dataset.class_names[13] == "id12"
    first = dataset.items[0]
    assert (first.image_id, first.relative_path, first.label) == ("img1.jpg", "images/img1.jpg", 1)
    # split by identities: the first half (6 of 13) train, the rest test
    train = {i.label for i in dataset.split("train")}
    assert train == set(range(1, 7)) and {i.label for i in dataset.split("test")} == set(range(7, 14))


def test_faces_bad_rows_are_recorded_with_their_line(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        _jpeg(tmp_path / "images" / name, size=(40, 30))
    (tmp_path / "identities.csv").write_text(
        "file,identity\n"
        "a.jpg,alice\n"
        "b.jpg,bob\n"
        "a.jpg,alice\n"          # line 4: listed again
        "c.jpg,carol\n"          # line 5: no such file
        "../x.jpg,eve\n"         # line 6: leaves images/
        "b.jpg\n"                # line 7: one field
        ",dave\n")               # line 8: empty file name
    dataset = load_faces(tmp_path)
    assert [(i.image_id, i.label) for i in dataset.items] == [("a.jpg", 1), ("b.jpg", 2)]
    lines = {e.line: e.problem for e in dataset.errors}
    assert "listed again (first on line 2)" in lines[4]
    assert "does not exist" in lines[5]
    assert "leaves the images folder" in lines[6]
    assert "1 fields" in lines[7]
    assert "empty file name" in lines[8]
    for line in lines:
        record("load_faces", f"identities.csv line {line}", "errors_row")
    (tmp_path / "identities.csv").write_text("photo,person\na.jpg,alice\n")
    with pytest.raises(DatasetError, match="lacks column"):
        load_faces(tmp_path)
    record("load_faces", "header without file,identity", "clean_error")


def test_specs_reach_the_identity_loaders(tmp_path):
    market = shared_data("market1501")
    assert dataset_from_spec(f"market1501:{market}").name == "market1501"
    assert len(dataset_from_spec(f"faces:{shared_data('faces')}").items) == 61
    for spec in (f"market1501:{tmp_path / 'absent'}", "faces:", "market1502:x"):
        with pytest.raises(DatasetError):
            check_dataset_spec(spec)
        record("dataset_from_spec", spec.replace(str(tmp_path), "TMP"), "clean_error")
