"""The two-branch cross-view model: its layout, its explanations (point-specific maps of cells are rows of P), and
checkpoints that never choose code to run."""

from __future__ import annotations

import pytest
import torch

from eml_core.crossview_model import (
    CrossViewModel,
    build_crossview_model,
    crossview_from_factory,
    crossview_model_from_spec,
    load_crossview_model,
    save_crossview_model,
)
from eml_core.decomposition import explain_pair
from eml_core.errors import ArgumentError, ModelError
from eml_core.models import CHECKPOINT_FORMAT, load_model, save_model
from tests.conftest import tiny_crossview_model, tiny_model
from tests.hostile.harness import record

TINY = "tests.conftest:tiny_crossview_factory"


def _inputs(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 32, 176, generator=g), torch.rand(batch, 3, 64, 64, generator=g)


def test_explain_is_explain_pair_with_the_aerial_branch(tiny_crossview):
    panorama, aerial = _inputs()
    explanation = tiny_crossview.explain(panorama, aerial)
    reference = explain_pair(tiny_crossview.street, panorama, aerial, retrieved_model=tiny_crossview.aerial)
    assert torch.allclose(explanation.similarity, reference.similarity)
    with torch.no_grad():
        street, aerial_embedding = tiny_crossview(panorama, aerial)
    assert torch.allclose(explanation.similarity, (street * aerial_embedding).sum(1), atol=1e-6)
    assert explanation.completeness_residual.abs().max() < 1e-6
    assert explanation.feature_size("query") == (8, 44) and explanation.feature_size("retrieved") == (16, 16)


def test_point_specific_cells_are_rows_of_p_and_maps_at_cell_centres(tiny_crossview):
    from eml_core.orientation import cell_centre_pixels

    panorama, aerial = _inputs(1)
    explanation = tiny_crossview.explain(panorama, aerial)
    cells = torch.tensor([[0, 17, 351], [5, 5, 100]])
    maps = explanation.point_specific_cells("query", cells)
    p = explanation.point_to_point.reshape(2, 8 * 44, 16, 16)
    for b in range(2):
        for k in range(3):
            assert torch.allclose(maps[b, k], p[b, cells[b, k]], atol=1e-7)
    x, y = cell_centre_pixels((8, 44), (32, 176))
    at_pixels = explanation.point_specific("query", [(x[17], y[17]), (x[351], y[351])])
    assert torch.allclose(at_pixels[0], maps[0, 1:], atol=1e-6)
    back = explanation.point_specific_cells("retrieved", torch.tensor([3, 4]))       # (B,) works too
    assert torch.allclose(back[0, 0], explanation.point_to_point[0, :, :, 0, 3], atol=1e-7)
    assert torch.allclose(back[1, 0], explanation.point_to_point[1, :, :, 0, 4], atol=1e-7)
    for bad in (torch.tensor([[8 * 44]] * 2), torch.tensor([[-1]] * 2), torch.tensor([[0.5]] * 2), torch.tensor([[1]])):
        with pytest.raises(ArgumentError, match="cells"):
            explanation.point_specific_cells("query", bad)


# --- checkpoints -----------------------------------------------------------------------------


def _same_outputs(a: CrossViewModel, b: CrossViewModel, panorama, aerial):
    with torch.no_grad():
        outputs = zip(a(panorama, aerial), b(panorama, aerial), strict=True)
        return all(torch.allclose(x, y, atol=1e-6) for x, y in outputs)


def test_builtin_layout_and_checkpoint_round_trip(tmp_path):
    model = build_crossview_model("mobilenet_v2", embedding_dim=16, panorama_size=(32, 176), aerial_size=(64, 64),
                                  pretrained=False, seed=3)
    # two backbones (nothing shared), one projection object in both heads
    assert model.street.backbone is not model.aerial.backbone
    assert not any(a is b for a in model.street.backbone.parameters() for b in model.aerial.backbone.parameters())
    assert model.shares_projection and model.street.head[-1].out_features == 16
    assert model.street.preprocessing.input_size == (32, 176) and model.aerial.preprocessing.input_size == (64, 64)
    assert model.street.stride == model.aerial.stride == 32
    with pytest.raises(ArgumentError, match="backbone"):
        build_crossview_model("alexnet")
    with torch.no_grad():
        model.street.head[-1].weight.mul_(2)      # a trained model differs from its seed's initialisation
    path = save_crossview_model(model, tmp_path / "cv.pt", extra={"note": "test"})
    loaded = load_crossview_model(path)
    assert loaded.shares_projection and loaded.config["embedding_dim"] == 16
    assert loaded.street.preprocessing.input_size == (32, 176) and loaded.aerial.stride == 32
    panorama, aerial = _inputs()
    assert _same_outputs(model, loaded, panorama, aerial)
    assert crossview_model_from_spec(str(path)).config["backbone"] == "mobilenet_v2"


def test_factory_checkpoint_needs_the_caller_to_name_the_factory(tmp_path, monkeypatch):
    monkeypatch.delenv("EML_TRUSTED_FACTORIES", raising=False)
    model = crossview_from_factory(TINY, seed=4)
    path = save_crossview_model(model, tmp_path / "tiny.pt")
    with pytest.raises(ModelError, match="never chooses code to run"):
        load_crossview_model(path)
    record("load_crossview_model", "factory checkpoint, factory not named", "clean_error")
    loaded = load_crossview_model(path, factory=TINY)
    assert _same_outputs(model, loaded, *_inputs()) and loaded.config["factory_kwargs"] == {"seed": 4}
    monkeypatch.setenv("EML_TRUSTED_FACTORIES", TINY)
    assert _same_outputs(model, load_crossview_model(path), *_inputs())


def _hostile(tmp_path, name, mutate):
    model = tiny_crossview_model()
    payload = {"format": CHECKPOINT_FORMAT, "config": {**model.config, "factory_kwargs": {}},
               "preprocessing": {b: model.branch(b).preprocessing.to_dict() for b in ("street", "aerial")},
               "stride": {"street": 4, "aerial": 4}, "state_dict": dict(model.state_dict()), "extra": {}}
    mutate(payload)
    path = tmp_path / f"{name}.pt"
    torch.save(payload, path)
    return path


HOSTILE = {
    "shared layer copies differ": (lambda p: p["state_dict"].__setitem__(
        "aerial.head.2.weight", p["state_dict"]["aerial.head.2.weight"] + 1), "copies of the shared layer"),
    "factory os:system": (lambda p: p["config"].update(factory="os:system", factory_kwargs={"command": "true"}),
                          "saved from factory 'os:system'"),
    "unknown source": (lambda p: p["config"].update(source="url"), "unknown source"),
    "unknown backbone": (lambda p: p["config"].update(source="builtin", backbone="evil", embedding_dim=5),
                         "unknown backbone"),
    "huge input size": (lambda p: p["config"].update(source="builtin", backbone="mobilenet_v2", embedding_dim=5,
                                                     panorama_size=[10**9, 5]), "panorama_size"),
    "NaN weights": (lambda p: p["state_dict"].__setitem__("street.backbone.0.weight",
                                                          torch.full_like(p["state_dict"]["street.backbone.0.weight"],
                                                                          float("nan"))), "non-finite"),
    "bad preprocessing": (lambda p: p["preprocessing"]["aerial"].update(std=[0, 0, 0]), "aerial branch"),
    "weights of another model": (lambda p: p["state_dict"].pop("street.backbone.0.weight"), "do not fit"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_checkpoints_are_refused_with_one_clear_error(tmp_path, case):
    mutate, message = HOSTILE[case]
    path = _hostile(tmp_path, case.replace(" ", "_"), mutate)
    with pytest.raises(ModelError, match=message) as caught:
        load_crossview_model(path, factory=TINY)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    record("load_crossview_model", case, "clean_error")


def test_single_and_two_branch_checkpoints_are_not_confused(tmp_path):
    cross = save_crossview_model(tiny_crossview_model(), tmp_path / "cross.pt")
    with pytest.raises(ModelError, match="two-branch cross-view checkpoint; load it with"):
        load_model(cross)
    single = save_model(tiny_model("gap_fc"), tmp_path / "single.pt")
    with pytest.raises(ModelError, match="single-branch model checkpoint"):
        load_crossview_model(single)
    record("load_model", "cross-view checkpoint", "clean_error")
    record("load_crossview_model", "single-branch checkpoint", "clean_error")


def test_specs_and_factories():
    assert isinstance(crossview_model_from_spec(TINY), CrossViewModel)
    with pytest.raises(ModelError, match="expected a backbone"):
        crossview_model_from_spec("not a spec")
    with pytest.raises(ModelError, match="cannot load it"):
        crossview_from_factory("tests.conftest:no_such_function")
    with pytest.raises(ModelError, match="returned EmbeddingModel"):
        crossview_from_factory("tests.conftest:tiny")
    with pytest.raises(ModelError, match="factory"):
        crossview_model_from_spec("os:getcwd", from_file="manifest.json")
    with pytest.raises(ModelError, match="two EmbeddingModel branches"):
        CrossViewModel(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1))
