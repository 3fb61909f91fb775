"""Cross-view data: the real CVUSA/CVACT samples at their real sizes, the generator against the angle
conventions, and bad input (each case an `errors` row naming the file; the load and the run go on)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import map_coordinates

from eml_core.crossview_data import (
    CVACT_PANORAMA_ROWS,
    CrossViewSyntheticConfig,
    DatasetError,
    compose_aerial,
    crop_rows,
    crossview_dataset_from_spec,
    ensure_crossview_dataset,
    generate_crossview_dataset,
    load_cvact,
    load_cvusa,
    load_pair_pixels,
    polar_panorama,
)
from eml_core.orientation import aerial_point, orientation_methods, panorama_azimuth, panorama_column, rotate_aerial
from eml_core.orientation_evaluation import estimate_orientation
from tests.conftest import shared_data
from tests.hostile.harness import record

# --- the real samples ----------------------------------------------------------------------------


def test_cvusa_sample_loads_at_real_sizes():
    dataset = load_cvusa(shared_data("cvusa"))               # the folder holding CVUSA/ is accepted
    assert [p.pair_id for p in dataset.pairs] == ["0000001", "0000002", "0000003", "0000004", "0000005", "0013073"]
    assert all(p.panorama_size == (224, 1232) and p.aerial_size == (750, 750) and p.split == "val"
               for p in dataset.pairs)
    assert dataset.pairs[0].relative_aerial == "bingmap/19/0000001.jpg"
    # pair 0013073 lists an annotation that the sample does not have: a warning, the pair is kept
    (warning,) = dataset.errors
    assert warning.severity == "warning" and warning.item == "0013073" and warning.line == 6
    assert warning.file.endswith("annotations/0013073.png") and "does not exist" in warning.problem
    assert dataset.pairs[-1].annotation is None and dataset.pairs[0].annotation.endswith("0000001.png")
    pixels = load_pair_pixels(dataset.pairs[0])
    assert pixels.panorama.shape == (3, 224, 1232) and pixels.aerial.shape == (3, 750, 750)


def test_cvact_sample_is_cropped_to_the_middle_half():
    dataset = load_cvact(shared_data("cvact"))
    (pair,) = dataset.pairs
    assert dataset.errors == [] and pair.split == "all"
    assert pair.panorama_rows == (208, 624) and pair.panorama_size == (416, 1664) and pair.aerial_size == (1200, 1200)
    pixels = load_pair_pixels(pair)
    whole = np.asarray(Image.open(pair.panorama).convert("RGB"), dtype=np.float32) / 255
    assert pixels.panorama.shape == (3, 416, 1664)
    assert torch.allclose(pixels.panorama.permute(1, 2, 0), torch.from_numpy(whole[208:624]))
    assert crop_rows(832, CVACT_PANORAMA_ROWS) == (208, 624)


@pytest.fixture(scope="module")
def real_pairs():
    return load_cvusa(shared_data("cvusa")).pairs + load_cvact(shared_data("cvact")).pairs


def test_real_pairs_run_through_both_methods_with_a_two_branch_model(real_pairs):
    from tests.conftest import tiny_crossview_model

    model = tiny_crossview_model(panorama_size=(224, 1232), aerial_size=(512, 512))   # the paper's input sizes
    rows, errors = estimate_orientation(model, real_pairs, {p.pair_id: [90.0, 275.5] for p in real_pairs})
    assert errors == [] and len(rows) == len(real_pairs) * 2 * len(orientation_methods())
    act = next(r for r in rows if r["pair_id"] == "pano_img" and r["method"] == "point_specific")
    assert 0 <= act["panorama_x"] < 1664 and 0 <= act["panorama_y"] < 416 and 0 <= act["aerial_x"] < 1200


def test_a_real_pair_with_the_default_backbone(real_pairs):
    from eml_core.crossview_model import build_crossview_model

    model = build_crossview_model("mobilenet_v2", embedding_dim=64, pretrained=False)
    rows, errors = estimate_orientation(model, real_pairs[:1], [90.0])
    assert errors == [] and {r["method"] for r in rows} == set(orientation_methods())
    overall = next(r for r in rows if r["method"] == "overall")
    # MobileNetV2 (stride 32) on 224x1232: a 7x39 grid, so the chosen column faces 360 (j + 0.5) / 39
    j = overall["panorama_azimuth"] * 39 / 360 - 0.5
    assert abs(j - round(j)) < 1e-9 and overall["truth"] == 90.0 and overall["panorama_y"] in {
        (i + 0.5) * 224 / 7 - 0.5 for i in range(7)}


# --- the generator against the conventions -------------------------------------------------------


def _dot(size, azimuth, radius):
    x, y = aerial_point(azimuth, radius, (size, size))
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 18.0).astype(np.float32)[..., None].repeat(3, 2)


@pytest.mark.parametrize("azimuth", [5.0, 100.0, 181.0, 300.0, 357.0])
def test_a_landmark_appears_at_its_predicted_column_and_row(azimuth):
    size, height, width = 121, 40, 360
    panorama = polar_panorama(_dot(size, azimuth, 36.0), (height, width))[..., 0]
    row, column = np.unravel_index(panorama.argmax(), panorama.shape)
    assert abs(((column - panorama_column(azimuth, width)) + width / 2) % width - width / 2) <= 1.0
    expected_row = (1 - 36.0 / (size / 2)) * height - 0.5                  # r = (S/2)(1 - (v + 0.5)/H)
    assert abs(row - expected_row) <= 1.0


@pytest.mark.parametrize("theta", [90.0, 37.0, 250.0])
def test_rotating_the_aerial_image_moves_the_panorama_by_theta(theta):
    size, width = 121, 360
    aerial = _dot(size, 40.0, 30.0) + 0.5 * _dot(size, 200.0, 50.0)
    panorama = polar_panorama(aerial, (40, width))
    rotated = rotate_aerial(torch.from_numpy(aerial).permute(2, 0, 1), theta).permute(1, 2, 0).numpy()
    moved = polar_panorama(np.ascontiguousarray(rotated), (40, width))
    shift = int(round(theta * width / 360))                               # one column per degree here
    assert np.abs(moved - np.roll(panorama, shift, axis=1)).max() < 0.03


def test_generated_pairs_are_aligned_with_their_landmarks(tiny_crossview_root):
    landmarks = json.loads((tiny_crossview_root / "landmarks.json").read_text())
    config = json.loads((tiny_crossview_root / "generator.json").read_text())
    height, width = config["panorama_size"]
    size = config["aerial_size"]
    checked = 0
    for pair_id, marks in landmarks.items():
        aerial = np.asarray(Image.open(tiny_crossview_root / "bingmap/19" / f"{pair_id}.png"), dtype=np.float32)
        panorama = np.asarray(Image.open(tiny_crossview_root / "streetview/panos" / f"{pair_id}.png"), dtype=np.float32)
        assert aerial.shape == (size, size, 3) and panorama.shape == (height, width, 3) and 3 <= len(marks) <= 5
        assert len({m["source"] for m in marks}) == len(marks)              # distinct landmarks
        for mark in marks:
            x, y = aerial_point(mark["azimuth"], mark["radius"], (size, size))
            u = int(round(panorama_column(mark["azimuth"], width))) % width
            v = int(round((1 - mark["radius"] / (size / 2)) * height - 0.5))
            # the pixel of the column facing the landmark, at the row of its distance, looks at the landmark ...
            source = aerial_point(panorama_azimuth(u, width), (size / 2) * (1 - (v + 0.5) / height), (size, size))
            assert np.hypot(source[0] - x, source[1] - y) < mark["diameter"] / 2, (pair_id, mark)
            # ... and shows the aerial image there (bilinear sample, an independent implementation)
            expected = [map_coordinates(aerial[..., c], [[source[1]], [source[0]]], order=1)[0] for c in range(3)]
            assert np.abs(panorama[v, u] - np.array(expected)).max() <= 6, (pair_id, mark)
            checked += 1
    assert checked >= 18


def test_generated_dataset_loads_is_deterministic_and_reused(tmp_path, tiny_crossview_root, tiny_crossview_dataset):
    assert tiny_crossview_dataset.errors == []
    assert len(tiny_crossview_dataset.split("train")) == 4 and len(tiny_crossview_dataset.split("val")) == 2
    config = CrossViewSyntheticConfig(**{**json.loads((tiny_crossview_root / "generator.json").read_text()),
                                         "panorama_size": (32, 176), "landmarks": (3, 5), "landmark_diameter":
                                         (0.16, 0.24), "landmark_radius": (0.35, 1.0), "roads": (0, 2)})
    again = generate_crossview_dataset(tmp_path, config)
    for relative in ("bingmap/19/0000003.png", "streetview/panos/0000006.png", "splits/val-19zl.csv"):
        assert (again / relative).read_bytes() == (tiny_crossview_root / relative).read_bytes()
    stamp = (again / "generator.json").stat().st_mtime_ns
    assert ensure_crossview_dataset(tmp_path, config) == again                # same config: reused, not rewritten
    assert (again / "generator.json").stat().st_mtime_ns == stamp
    rng = np.random.default_rng(1)
    image, marks = compose_aerial(rng, config)
    azimuths = sorted(m.azimuth for m in marks)
    gaps = np.diff(azimuths + [azimuths[0] + 360])
    assert image.shape == (96, 96, 3) and gaps.min() >= config.min_separation


def test_dataset_specs(tmp_path):
    small = CrossViewSyntheticConfig(train_pairs=2, val_pairs=1, aerial_size=48, panorama_size=(16, 88))
    dataset = crossview_dataset_from_spec(f"synthetic:{tmp_path}", synthetic_config=small)
    assert dataset.name == "synthetic_crossview" and len(dataset.pairs) == 3 and dataset.errors == []
    assert dataset.fingerprint() == crossview_dataset_from_spec(f"synthetic:{tmp_path}",
                                                                synthetic_config=small).fingerprint()
    assert [p.pair_id for p in crossview_dataset_from_spec(f"cvusa:{tmp_path}", splits="val").pairs] == ["0000003"]
    with pytest.raises(DatasetError, match="does not exist"):
        crossview_dataset_from_spec(f"cvusa:{tmp_path / 'nowhere'}")
    with pytest.raises(DatasetError, match="expected cvusa:PATH"):
        crossview_dataset_from_spec("kitti:/data")


# --- bad input -----------------------------------------------------------------------------------


def _image(path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 128, dtype=np.uint8)).save(path)


@pytest.fixture()
def bad_cvusa(tmp_path):
    """A CVUSA folder: 2 good pairs, and one pair per kind of bad input."""
    root = tmp_path / "CVUSA"
    for pair_id in ("0000001", "0000002", "0000003", "0000005", "0000006", "0000007"):
        _image(root / f"streetview/panos/{pair_id}.jpg", 176, 32)
        _image(root / f"bingmap/19/{pair_id}.jpg", 64, 64)
    _image(root / "streetview/panos/0000003.jpg", 64, 32)           # aspect 2, not 5.5
    _image(root / "bingmap/19/0000005.jpg", 64, 48)                 # not square
    (root / "bingmap/19/0000007.jpg").write_bytes(b"not an image")
    lines = ["bingmap/19/0000001.jpg,streetview/panos/0000001.jpg,annotations/0000001.png",
             "bingmap/19/0000002.jpg,streetview/panos/0000002.jpg",
             "bingmap/19/0000003.jpg,streetview/panos/0000003.jpg",
             "bingmap/19/0000004.jpg,streetview/panos/0000004.jpg",             # listed, missing on disk
             "bingmap/19/0000005.jpg,streetview/panos/0000005.jpg",
             "bingmap/19/0000006.jpg",                                          # one field
             "bingmap/19/0000007.jpg,streetview/panos/0000007.jpg",
             "../../etc/passwd,streetview/panos/0000006.jpg",
             "bingmap/19/0000002.jpg,streetview/panos/0000002.jpg"]             # listed twice
    (root / "splits").mkdir()
    (root / "splits/val-19zl.csv").write_text("\n".join(lines))
    (root / "splits/train-19zl.csv").write_text("\n\n")                 # empty
    return root


def test_bad_input_becomes_error_rows_and_the_rest_loads(bad_cvusa):
    dataset = load_cvusa(bad_cvusa)
    assert [p.pair_id for p in dataset.pairs] == ["0000001", "0000002"]
    problems = {(e.line, e.item): e for e in dataset.errors}
    val = str(bad_cvusa / "splits/val-19zl.csv")
    expected = {
        "missing annotation (warning)": (1, "0000001", "annotations/0000001.png", "annotation file does not exist"),
        "panorama of the wrong aspect": (3, "0000003", "panos/0000003.jpg", "(aspect 2.00), expected a 360-degree"),
        "file listed in a split, missing": (4, "0000004", "panos/0000004.jpg", "image file does not exist"),
        "non-square aerial image": (5, "0000005", "19/0000005.jpg", "64x48, not square"),
        "row with one field": (6, None, "val-19zl.csv", "found 1 field"),
        "unreadable image": (7, "0000007", "19/0000007.jpg", "not a readable image"),
        "path leaving the dataset": (8, "0000006", "val-19zl.csv", "leaves the dataset folder"),
        "pair listed twice": (9, "0000002", "val-19zl.csv", "listed again"),
    }
    for case, (line, item, file, text) in expected.items():
        error = problems[(line, item)]
        assert error.file.endswith(file) and text in error.problem, (case, error)
        if file != "val-19zl.csv" and line != 1:
            assert f"listed in {val}" in error.problem
        record("load_cvusa", case, "errors_row")
    empty = [e for e in dataset.errors if e.file.endswith("train-19zl.csv")]
    assert len(empty) == 1 and empty[0].problem == "split file lists no pairs"
    record("load_cvusa", "empty split file", "errors_row")
    assert len(dataset.errors) == len(expected) + 1


def test_the_run_goes_on_after_bad_input(bad_cvusa, tiny_crossview):
    dataset = load_cvusa(bad_cvusa)
    rows, errors = estimate_orientation(tiny_crossview, dataset.pairs, [10.0, 200.0])
    assert len(rows) == 2 * 2 * len(orientation_methods()) and errors == []
    # a file replaced by a wrong one after loading: an error row at run time, the other pair still runs
    _image(bad_cvusa / "streetview/panos/0000002.jpg", 90, 90)
    rows, errors = estimate_orientation(tiny_crossview, dataset.pairs, [10.0], panorama_aspect=176 / 32)
    assert {r["pair_id"] for r in rows} == {"0000001"}
    assert len(errors) == 1 and errors[0].item == "0000002" and "aspect 1.00" in errors[0].problem
    record("estimate_orientation", "panorama replaced after loading", "errors_row")


def test_missing_layout_raises_and_named_split_missing_is_a_row(tmp_path, bad_cvusa):
    with pytest.raises(DatasetError, match="split folder is missing"):
        load_cvusa(tmp_path / "empty")
    record("load_cvusa", "no splits folder", "clean_error")
    dataset = load_cvusa(bad_cvusa, splits=["test"])
    assert dataset.pairs == [] and dataset.errors[0].problem == "split file does not exist"
    assert dataset.errors[0].file.endswith("splits/test-19zl.csv")
    good_line = b"bingmap/19/0000001.jpg,streetview/panos/0000001.jpg\n"
    (bad_cvusa / "splits/val-19zl.csv").write_bytes(good_line + b"\xff\xfe,x\n")
    dataset = load_cvusa(bad_cvusa, splits=["val-19zl.csv"])
    assert [p.pair_id for p in dataset.pairs] == ["0000001"] and "not valid UTF-8" in dataset.errors[0].problem
    record("load_cvusa", "non-UTF-8 line", "errors_row")


def test_cvact_anu_layout_with_a_missing_satellite_image(tmp_path):
    for pair_id in ("a1", "b2"):
        _image(tmp_path / f"streetview/{pair_id}_grdView.jpg", 128, 64)
    _image(tmp_path / "satview_polish/a1_satView_polish.jpg", 80, 80)
    dataset = load_cvact(tmp_path)
    assert [p.pair_id for p in dataset.pairs] == ["a1"] and dataset.pairs[0].panorama_size == (32, 128)
    (error,) = dataset.errors
    assert error.item == "b2" and error.file.endswith("b2_satView_polish.jpg") and "does not exist" in error.problem
    record("load_cvact", "satellite image missing", "errors_row")
    with pytest.raises(DatasetError, match="no CVACT pairs"):
        load_cvact(tmp_path / "streetview")
