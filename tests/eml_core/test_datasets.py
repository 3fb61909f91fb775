"""Dataset loaders: the real CUB sample, bad annotations and images, the folder+CSV layout, the generator."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from eml_core.dataset_specs import dataset_from_spec
from eml_core.datasets import DatasetError, load_cub
from eml_core.synthetic import SyntheticConfig, ensure_synthetic_dataset, generate_synthetic_dataset
from tests.conftest import shared_data


def test_real_cub_sample_loads_completely():
    dataset = load_cub(shared_data("cub200"))
    assert len(dataset.items) == 400
    assert len(dataset.labels) == 50
    assert len(dataset.split("train")) == 200 and len(dataset.split("test")) == 200
    # the default is the class rule: classes 1-25 train, 26-50 evaluate (the full CUB's 1-100 / 101-200)
    assert dataset.split_rule == "classes"
    assert {i.label for i in dataset.split("train")} == set(range(1, 26))
    assert {i.label for i in dataset.split("test")} == set(range(26, 51))
    assert not [e for e in dataset.errors if e.severity == "error"]
    for item in dataset.items:
        height, width = item.size
        x0, y0, x1, y1 = item.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, item
    # the boxes that stick out of their image are clipped and reported, naming file and line
    for warning in dataset.errors:
        assert warning.file.endswith("bounding_boxes.txt") and warning.line and "clipped" in warning.problem
    assert dataset.class_names[1] == "001.Black_footed_Albatross"


def _tiny_cub(folder, images=4):
    """A CUB-layout folder with `images` images of two classes."""
    root = folder / "CUB_200_2011"
    (root / "images" / "001.a").mkdir(parents=True)
    (root / "images" / "002.b").mkdir(parents=True)
    lines = {"images": [], "boxes": [], "labels": [], "split": []}
    for n in range(1, images + 1):
        label = 1 if n <= images // 2 else 2
        relative = f"{label:03d}.{'ab'[label - 1]}/img_{n}.png"
        Image.fromarray(np.full((40, 60, 3), 30 * n, dtype=np.uint8)).save(root / "images" / relative)
        lines["images"].append(f"{n} {relative}")
        lines["boxes"].append(f"{n} 5 5 20 20")
        lines["labels"].append(f"{n} {label}")
        lines["split"].append(f"{n} {n % 2}")
    for key, name in (("images", "images.txt"), ("boxes", "bounding_boxes.txt"), ("labels", "image_class_labels.txt"),
                      ("split", "train_test_split.txt")):
        (root / name).write_text("\n".join(lines[key]) + "\n")
    (root / "classes.txt").write_text("1 001.a\n2 002.b\n")
    return root


def test_bad_annotations_and_images_are_recorded_with_file_and_line(tmp_path):
    root = _tiny_cub(tmp_path, images=6)
    boxes = (root / "bounding_boxes.txt").read_text().splitlines()
    boxes[1] = "2 5 5 oops 20"                 # malformed
    boxes[2] = "3 500 500 20 20"               # outside the 60x40 image
    boxes[3] = "4 50 30 20 20"                 # sticks out: clipped, kept
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (root / "images" / "002.b" / "img_5.png").write_bytes(b"not a png")   # corrupt
    (root / "images" / "002.b" / "img_6.png").unlink()                    # missing
    dataset = load_cub(tmp_path)
    assert [i.image_id for i in dataset.items] == ["1", "4"]
    problems = {(e.item, e.severity): e for e in dataset.errors}
    assert problems[("2", "error")].line == 2 and "cannot parse" in problems[("2", "error")].problem
    assert "lies outside the 60x40 image" in problems[("3", "error")].problem and problems[("3", "error")].line == 3
    assert "clipped" in problems[("4", "warning")].problem
    assert "not a readable image" in problems[("5", "error")].problem
    assert problems[("5", "error")].file.endswith("img_5.png")
    assert "listed in" in problems[("5", "error")].problem and problems[("5", "error")].line == 5
    assert "does not exist" in problems[("6", "error")].problem
    assert dataset.items[1].box == (50.0, 30.0, 60.0, 40.0)


def test_missing_annotation_file_is_reported_and_index_file_is_required(tmp_path):
    root = _tiny_cub(tmp_path)
    (root / "train_test_split.txt").unlink()
    dataset = load_cub(tmp_path, split_rule="official")
    assert not dataset.items
    assert any(e.file.endswith("train_test_split.txt") and "missing" in e.problem for e in dataset.errors)
    # the class rule never reads the per-image split file
    by_classes = load_cub(tmp_path)
    assert len(by_classes.items) == 4 and not by_classes.errors
    (root / "images.txt").unlink()
    with pytest.raises(DatasetError, match=r"images\.txt: CUB index file is missing"):
        load_cub(tmp_path)


def test_folder_csv_loader(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((30, 50, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "annotations.csv").write_text(
        "image,label,split,x,y,width,height\n"
        "a.png,1,train,1,2,10,10\n"
        "b.png,x,train,1,2,10,10\n"
        "b.png,2,test,,,,\n"
        "c.png,2,test,0,0,5,5\n")
    dataset = dataset_from_spec(f"folder:{tmp_path}")
    assert [(i.relative_path, i.label, i.split, i.box) for i in dataset.items] == [
        ("a.png", 1, "train", (1.0, 2.0, 11.0, 12.0)), ("b.png", 2, "test", None)]
    assert [(e.line, e.severity) for e in dataset.errors] == [(3, "error"), (5, "error")]
    assert dataset.split_rule == "official"  # the CSV's own split column is the folder layout's default


def test_synthetic_generator_is_deterministic_and_boxes_are_exact(tmp_path):
    config = SyntheticConfig(classes=3, images_per_class=4, seed=7)
    first = load_cub(generate_synthetic_dataset(tmp_path / "a", config))
    second = load_cub(generate_synthetic_dataset(tmp_path / "b", config))
    assert len(first.items) == 12 and not first.errors and first.labels == [1, 2, 3]
    assert [i.box for i in first.items] == [i.box for i in second.items]
    for one, two in zip(first.items, second.items, strict=True):
        assert (np.asarray(Image.open(one.path)) == np.asarray(Image.open(two.path))).all()
    assert first.split_rule == "classes" and {i.label for i in first.split("train")} == {1}  # 3 classes: 1 / 2
    official = load_cub(tmp_path / "a", split_rule="official")
    assert sum(i.split == "train" for i in official.items) == 6  # the first half of each class's images
    # reused when the config matches, regenerated when it changes
    stamp = (tmp_path / "a" / "CUB_200_2011" / "generator.json").stat().st_mtime_ns
    ensure_synthetic_dataset(tmp_path / "a", config)
    assert (tmp_path / "a" / "CUB_200_2011" / "generator.json").stat().st_mtime_ns == stamp
    other = load_cub(ensure_synthetic_dataset(tmp_path / "a", SyntheticConfig(classes=2, images_per_class=2)))
    assert len(other.items) == 4
    shutil.rmtree(tmp_path / "b")


def test_unknown_dataset_spec():
    with pytest.raises(DatasetError, match="expected cub:PATH"):
        dataset_from_spec("imagenet:/data")


def _class_sides(dataset) -> tuple[set[int], set[int]]:
    return {i.label for i in dataset.split("train")}, {i.label for i in dataset.split("test")}


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_the_class_rule_puts_no_class_on_both_sides(tmp_path, classes):
    root = generate_synthetic_dataset(tmp_path, SyntheticConfig(classes=classes, images_per_class=2))
    dataset = dataset_from_spec(f"cub:{root}")
    train, test = _class_sides(dataset)
    assert not train & test and train | test == set(range(1, classes + 1))
    assert train == set(range(1, classes // 2 + 1))  # the first half of the sorted class ids (n // 2 of n)
    official = dataset_from_spec(f"cub:{root}", split_rule="official")
    assert official.split_rule == "official" and _class_sides(official)[0] == _class_sides(official)[1]
    assert [i.image_id for i in official.items] == [i.image_id for i in dataset.items]
    assert official.fingerprint() != dataset.fingerprint()  # the split is part of what a run depends on


def test_the_class_rule_on_a_folder_csv_needs_no_split_column(tmp_path):
    for n in range(4):
        Image.fromarray(np.zeros((30, 50, 3), dtype=np.uint8)).save(tmp_path / f"{n}.png")
    (tmp_path / "annotations.csv").write_text("image,label\n0.png,7\n1.png,7\n2.png,3\n3.png,9\n")
    dataset = dataset_from_spec(f"folder:{tmp_path}", split_rule="classes")
    assert [(i.label, i.split) for i in dataset.items] == [(7, "test"), (7, "test"), (3, "train"), (9, "test")]
    with pytest.raises(DatasetError, match="lacks column"):
        dataset_from_spec(f"folder:{tmp_path}")  # the official rule reads the split column


def test_split_rules_a_dataset_cannot_honour_are_refused_with_the_reason(tmp_path):
    from eml_core.dataset_specs import check_dataset_spec, split_rule_of

    assert split_rule_of("cub:/x") == "classes" and split_rule_of("synthetic") == "classes"
    assert split_rule_of("folder:/x") == "official" and split_rule_of("market1501:/x") == "official"
    with pytest.raises(DatasetError, match="already keeps training and test identities apart"):
        check_dataset_spec(f"market1501:{tmp_path}", split_rule="classes")
    with pytest.raises(DatasetError, match="no per-image split"):
        check_dataset_spec(f"faces:{tmp_path}", split_rule="official")
    with pytest.raises(DatasetError, match="expected one of classes, official"):
        check_dataset_spec(f"cub:{tmp_path}", split_rule="random")
