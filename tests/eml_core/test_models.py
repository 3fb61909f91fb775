"""Models: torchvision backbones, checkpoints, factories, offline weights, bad models."""

from __future__ import annotations

import pytest
import torch

from eml_core import (
    ArgumentError,
    ImageError,
    ModelError,
    build_model,
    explain_pair,
    load_model,
    model_from_spec,
    save_model,
)
from eml_core.models import Preprocessing
from eml_core.weights import hub_checkpoint_dir, published_hash_prefix, sha256_of
from tests.conftest import tiny_model


@pytest.mark.parametrize("backbone,channels,stride", [("resnet50", 2048, 32), ("vgg16", 512, 16),
                                                      ("mobilenet_v2", 1280, 32)])
def test_torchvision_backbones_end_at_the_last_conv_block(backbone, channels, stride):
    model = build_model(backbone, "gap_fc", embedding_dim=8, pretrained=False, input_size=(64, 96))
    with torch.no_grad():
        a = model.features(torch.zeros(1, 3, 64, 96))
    assert a.shape == (1, channels, 64 // stride, 96 // stride)
    assert model.stride == stride
    assert model(torch.zeros(2, 3, 64, 96)).shape == (2, 8)


def test_pretrained_mobilenet_v2_loads_offline_from_the_hub_cache():
    cached = hub_checkpoint_dir() / "mobilenet_v2-b0353104.pth"
    if not cached.exists():
        pytest.skip(f"{cached} not installed (`make setup` runs `eml setup-weights`)")
    assert sha256_of(cached).startswith(published_hash_prefix(cached.name))
    model = build_model("mobilenet_v2", "gap", pretrained=True)
    first_conv = model.backbone[0][0].weight
    import torchvision
    reference = torch.load(cached, weights_only=True)["features.0.0.weight"]
    assert torch.equal(first_conv, reference)
    assert torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url.endswith(cached.name)


def test_missing_weights_are_reported_loudly(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import eml_core.weights as weights

    def no_network(*args, **kwargs):
        raise OSError("network unreachable (test)")

    import torchvision.models._api as torchvision_weights_api

    monkeypatch.setattr(torchvision_weights_api, "load_state_dict_from_url", no_network)
    with pytest.raises(ModelError, match=r"vgg16-397923af\.pth are not in the torch hub cache"):
        build_model("vgg16", "gap", pretrained=True)
    with pytest.warns(UserWarning, match="FALLING BACK TO RANDOM INITIALISATION"):
        model = build_model("vgg16", "gap", pretrained=True, allow_random_init=True, input_size=(32, 32))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 512)
    assert weights.hub_checkpoint_dir() == tmp_path / "checkpoints"


def test_checkpoint_round_trip(tmp_path):
    model = build_model("mobilenet_v2", "flatten_fc_bn", embedding_dim=6, pretrained=False, input_size=(64, 64), seed=3)
    with torch.no_grad():
        model.head[0].running_mean.normal_()
    path = save_model(model, tmp_path / "m.pt")
    loaded = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))
    assert loaded.preprocessing.input_size == (64, 64) and loaded.config["head"] == "flatten_fc_bn"
    assert isinstance(model_from_spec(str(path)).preprocessing, Preprocessing)


def test_factory_checkpoint_round_trip(tmp_path):
    model = model_from_spec("tests.conftest:tiny")
    path = save_model(model, tmp_path / "tiny.pt")
    loaded = load_model(path)
    x = torch.randn(1, 3, 24, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))


def test_model_spec_errors_are_clear(tmp_path):
    with pytest.raises(ArgumentError, match="unknown head 'gapp'"):
        model_from_spec("mobilenet_v2:gapp", pretrained=False)
    with pytest.raises(ModelError, match="expected 'backbone:head'"):
        model_from_spec("not/a/file.pt")
    with pytest.raises(ModelError, match="cannot import 'no_such_module'"):
        model_from_spec("no_such_module:factory")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"bad\.pt: not a readable checkpoint"):
        load_model(bad)


def test_non_finite_weights_are_refused(tmp_path):
    model = tiny_model("gap_fc")
    with torch.no_grad():
        model.head[2].weight[0, 0] = float("nan")
    path = save_model(model, tmp_path / "nan.pt")
    with pytest.raises(ModelError, match=r"nan\.pt: model has non-finite .* head\.2\.weight"):
        load_model(path)


def test_image_smaller_than_the_stride_is_refused():
    model = build_model("mobilenet_v2", "gap", pretrained=False, input_size=None)
    with pytest.raises(ImageError, match="smaller than the backbone's stride of 32"):
        explain_pair(model, torch.zeros(1, 3, 20, 64), torch.zeros(1, 3, 64, 64))


def test_preprocessing_resizes_normalises_and_orders_channels():
    prep = Preprocessing(input_size=(2, 2), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channel_order="BGR")
    pixels = torch.zeros(3, 4, 4)
    pixels[0] = 1.0  # red
    out = prep(pixels)
    assert out.shape == (3, 2, 2)
    assert torch.allclose(out[2], torch.ones(2, 2)) and torch.allclose(out[0], -torch.ones(2, 2))
