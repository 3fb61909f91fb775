"""Hostile datasets: malformed CSV and CUB annotation files, bad images inside a dataset, and a localization run
over such a dataset (issue 7, items 4 and 6). Every bad line or image is an `errors` row naming its file and
line; the loaders raise only for a dataset that cannot be read at all; the run completes."""

from __future__ import annotations

import csv
import io
import math
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from eml_core.datasets import LINE_BREAK, DatasetError, ErrorRecord, check_box, load_cub, load_folder
from tests.hostile.harness import record
from tests.hostile.images import hostile_images

FIELD = st.one_of(st.text(max_size=12), st.sampled_from(["", "train", "test", "a.png", "b.png", "1", "-3", "nan",
                                                         "inf", "1e308", "0", " 5 ", "ü", "\n", '"', ","]))


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("csvroot")
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((30, 50, 3), dtype=np.uint8)).save(root / name)
    return root


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(FIELD, min_size=0, max_size=9), max_size=8))
def test_any_csv_rows_load_or_become_error_rows(two_images, rows):
    """Random records (short, long, quoted, multi-line, non-numeric...) never raise; each non-blank record is an
    item or an error row, and error rows name the CSV and a line inside it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "label", "split", "x", "y", "width", "height"])
    writer.writerows(rows)
    text = buffer.getvalue()
    (two_images / "annotations.csv").write_text(text)
    dataset = load_folder(two_images)
    lines = len(LINE_BREAK.findall(text)) + 1
    non_blank = sum(1 for r in rows if any(f.strip() for f in r))
    reported = {e.item for e in dataset.errors if e.severity == "error"}
    assert len(dataset.items) + len(reported) == non_blank
    for error in dataset.errors:
        assert error.file.endswith("annotations.csv") and 2 <= error.line <= lines
    for item in dataset.items:
        assert item.box is None or (0 <= item.box[0] < item.box[2] <= 50 and 0 <= item.box[1] < item.box[3] <= 30)
    record("load_folder (CSV)", f"{len(rows)} random records", "errors_row" if dataset.errors else "handled")


@given(box=st.tuples(*[st.floats(allow_nan=True, allow_infinity=True, width=32)] * 4),
       size=st.tuples(st.integers(1, 500), st.integers(1, 500)))
def test_any_box_is_clipped_inside_its_image_or_reported(box, size):
    errors: list[ErrorRecord] = []
    clipped = check_box(box, size, "load_dataset", "1", "boxes.txt", 3, errors)
    if clipped is None:
        assert errors and errors[0].severity == "error"
    else:
        x0, y0, x1, y1 = clipped
        assert all(math.isfinite(v) for v in clipped)
        assert 0 <= x0 < x1 <= size[1] and 0 <= y0 < y1 <= size[0]


def test_csv_lines_are_physical_lines_and_short_or_duplicate_rows_are_reported(two_images, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(two_images, root)
    (root / "annotations.csv").write_text(
        "image,label,split,x,y,width,height\n"
        "\n"                                       # line 2: blank
        'a.png,1,train,1,2,10,10\n'                # line 3
        '"b\n.png",1,train,1,2,10,10\n'            # lines 4-5: a quoted field over two lines (no such file)
        "b.png,1,test,1,2\n"                       # line 6: short row
        "a.png,1,test,1,2,10,10\n"                 # line 7: a.png again
        "b.png,2,test,,,,\n")                      # line 8: no box, on purpose
    dataset = load_folder(root)
    assert [(i.relative_path, i.line if hasattr(i, "line") else None) for i in dataset.items][0][0] == "a.png"
    assert [i.relative_path for i in dataset.items] == ["a.png", "b.png"]
    problems = {e.line: e.problem for e in dataset.errors}
    assert set(problems) == {4, 6, 7}
    assert "does not exist" in problems[4]
    assert "row has 5 fields, the header has 7" in problems[6]
    assert "a.png is listed again (first on line 3)" in problems[7]
    for line, problem in problems.items():
        record("load_folder (CSV)", f"line {line}: {problem[:40]}", "errors_row")


def test_annotation_paths_cannot_leave_the_dataset(two_images, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(two_images, root)
    Image.fromarray(np.zeros((30, 50, 3), dtype=np.uint8)).save(tmp_path / "private.png")
    (root / "annotations.csv").write_text("image,label,split\n../private.png,1,train\n"
                                          f"{tmp_path / 'private.png'},1,train\na.png,1,train\n")
    dataset = load_folder(root)
    assert [i.relative_path for i in dataset.items] == ["a.png"]
    assert [e.line for e in dataset.errors if "leaves the dataset folder" in e.problem] == [2, 3]
    record("load_folder (CSV)", "image paths leaving the dataset (../, absolute)", "errors_row")


def test_cub_orphan_non_utf8_and_duplicate_lines_are_reported(tmp_path):
    from tests.eml_core.test_datasets import _tiny_cub

    root = _tiny_cub(tmp_path, images=4)
    with open(root / "bounding_boxes.txt", "ab") as handle:
        handle.write(b"9 1 1 5 5\n")                       # line 5: an id images.txt does not list
        handle.write(b"\xff\xfe 2 3 4 5\n")                # line 6: not UTF-8
    with open(root / "images.txt", "a") as handle:
        handle.write("7 001.a/img_1.png\n")                # line 5: the same image as id 1
    dataset = load_cub(tmp_path)
    assert [i.image_id for i in dataset.items] == ["1", "2", "3", "4"]
    found = {(e.file.rsplit("/", 1)[1], e.line): e for e in dataset.errors}
    assert "images.txt does not list" in found[("bounding_boxes.txt", 5)].problem
    assert "not valid UTF-8" in found[("bounding_boxes.txt", 6)].problem
    assert "listed again (first as id 1)" in found[("images.txt", 5)].problem
    for (file, line), error in found.items():
        record("load_cub", f"{file}:{line} {error.problem[:40]}", "errors_row")


@pytest.mark.parametrize("broken", ["images.txt", "annotations.csv"])
def test_a_dataset_without_its_index_is_one_clear_error(tmp_path, broken):
    if broken == "images.txt":
        (tmp_path / "CUB_200_2011").mkdir()
        with pytest.raises(DatasetError, match=r"images\.txt: CUB index file is missing"):
            load_cub(tmp_path)
    else:
        (tmp_path / "annotations.csv").write_bytes(b"\xff\xfeimage,label\n")
        with pytest.raises(DatasetError, match=r"annotations\.csv: line 1 is not valid UTF-8"):
            load_folder(tmp_path)
    record("dataset loaders", f"unreadable {broken}", "clean_error")


def test_localization_run_over_a_hostile_dataset_completes_with_errors_rows(prefect_harness, tiny_synthetic_root,
                                                                             tmp_path):
    """Bad images (bomb, zero-byte, truncated, 1x1, ...) inside a dataset: each is an errors row, the run
    completes and writes every table (before the fix a decompression bomb ended the run with nothing written)."""
    from eml_core.results import resolve_run
    from flows.evaluate_localization import evaluate_localization
    from tasks.configs import LocalizationConfig

    root = tmp_path / "data"
    cub = root / "CUB_200_2011"
    shutil.copytree(tiny_synthetic_root, cub)  # the fixture is the CUB_200_2011 folder itself
    bad = hostile_images(tmp_path / "bad")
    index = (cub / "images.txt").read_text().splitlines()
    extra = {"images": [], "boxes": [], "labels": [], "split": []}
    chosen = {case: path for case, (path, expectation) in bad.items()
              if path.is_file() and case != "3x4000 sliver" and (expectation == "error" or case == "1x1 image")}
    for offset, path in enumerate(chosen.values()):
        image_id = 1000 + offset
        relative = f"bad/{image_id}{path.suffix}"
        (cub / "images" / "bad").mkdir(exist_ok=True)
        shutil.copy(path, cub / "images" / relative)
        extra["images"].append(f"{image_id} {relative}")
        extra["boxes"].append(f"{image_id} 0 0 1 1")
        extra["labels"].append(f"{image_id} 4")  # an evaluation class under the default class rule: localized
        extra["split"].append(f"{image_id} {offset % 2}")
    (cub / "images.txt").write_text("\n".join(index + extra["images"]) + "\n")
    for key, name in (("boxes", "bounding_boxes.txt"), ("labels", "image_class_labels.txt"),
                      ("split", "train_test_split.txt")):
        lines = (cub / name).read_text().splitlines()
        (cub / name).write_text("\n".join(lines + extra[key]) + "\n")
    result = evaluate_localization(LocalizationConfig(dataset=f"cub:{root}", model="tests.conftest:tiny",
                                                      out=str(tmp_path / "run"), shard_size=5,
                                                      methods=("decomposition",)))
    store = resolve_run(str(tmp_path / "run"), "localization")
    errors = store.read_table("errors.parquet")
    items = store.read_table("localization_items.parquet")
    assert items["image_id"].nunique() == 8  # every good image of the evaluation classes (3-4) localized
    for offset, case in enumerate(chosen):
        image_id = str(1000 + offset)
        rows = errors[errors["item"] == image_id]
        assert len(rows) >= 1, case
        assert image_id not in set(items["image_id"]), case
        record("localization flow (dataset images)", case, "errors_row")
    assert result["manifest"]["errors"] >= len(chosen)
