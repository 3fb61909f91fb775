"""Training: pytorch-metric-learning losses on cached features; the checkpoint reads back."""

from __future__ import annotations

import pytest
import torch

from eml_core import load_model, save_model
from eml_core.heads import build_head
from eml_core.training import TrainingConfig, fine_tune_model, fit_head, train_model
from tests.conftest import tiny_model


@pytest.mark.parametrize("loss", ["multi_similarity", "triplet"])
def test_fit_head_reduces_the_loss_on_separable_features(loss):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, 1, 1, generator=g) * 2
    labels = torch.arange(4).repeat_interleave(8)
    maps = centres[labels] + 0.8 * torch.randn(32, 8, 3, 3, generator=g)
    torch.manual_seed(0)
    head = build_head("gap_fc", 8, 4)
    history = fit_head(head, maps, labels, TrainingConfig(loss=loss, epochs=15, batch_size=16, learning_rate=1e-2))
    assert len(history) == 15 and history[-1] < history[0]
    assert not head.training


def test_train_model_end_to_end_and_checkpoint_round_trip(tiny_synthetic, tmp_path):
    config = TrainingConfig(epochs=2, embedding_dim=16, input_size=(64, 64))
    model, report = train_model(tiny_synthetic.split("train"), config)
    assert report.train_items == len(tiny_synthetic.split("train")) and len(report.loss_history) == 2
    path = save_model(model, tmp_path / "m.pt")
    loaded = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert loaded.config["training"]["loss"] == "multi_similarity"


def test_batches_without_two_classes_are_refused():
    from eml_core import ArgumentError

    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    with pytest.raises(ArgumentError, match="fewer than 2 classes"):
        fit_head(build_head("gap", 4), torch.randn(6, 4, 2, 2), labels, TrainingConfig(images_per_class=4))


def test_unknown_loss_is_refused():
    from eml_core import ArgumentError

    with pytest.raises(ArgumentError, match="loss"):
        TrainingConfig(loss="contrastive")


def test_fine_tuning_trains_the_backbone_too(tiny_synthetic):
    config = TrainingConfig(epochs=1, embedding_dim=8, input_size=(64, 64), fine_tune=True, batch_size=6,
                            images_per_class=2, learning_rate=1e-2)
    from eml_core.models import build_model

    before = build_model("mobilenet_v2", "gap_fc", 8, input_size=(64, 64)).backbone[0][0].weight.clone()
    model, report = train_model(tiny_synthetic.split("train"), config)
    assert len(report.loss_history) == 1 and report.train_items == len(tiny_synthetic.split("train"))
    assert not torch.equal(model.backbone[0][0].weight, before)
    assert not model.training


def test_paper_like_resnet50_gmp_fc_fine_tunes_on_cpu_streaming_images_from_disk(tiny_synthetic, monkeypatch):
    """The paper-like configuration (ResNet-50, GMP, 512-d FC, Multi-Similarity, fine-tuned), tiny: 8 images,
    1 epoch, 64x64 inputs, random initialisation (ImageNet weights of ResNet-50 are not installed offline).
    Images stream through a DataLoader: nothing stacks the whole dataset (load_batch is never called)."""
    import eml_core.training as training

    def never(*args, **kwargs):
        raise AssertionError("fine-tuning must not decode every image up front")

    monkeypatch.setattr(training, "load_batch", never)
    config = TrainingConfig(backbone="resnet50", head="gmp_fc", embedding_dim=512, epochs=1, input_size=(64, 64),
                            fine_tune=True, batch_size=8, images_per_class=4, pretrained=False, amp=True)
    items = tiny_synthetic.split("train")
    assert len(items) == 8
    model, report = train_model(items, config)
    assert len(report.loss_history) == 1 and report.train_items == 8 and not report.errors
    assert model.config["backbone"] == "resnet50" and model.config["head"] == "gmp_fc"
    assert model.config["training"]["fine_tune"] and model.config["training"]["amp"]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_fine_tuning_records_an_unreadable_image_once_and_goes_on(tiny_synthetic, tmp_path):
    import dataclasses
    import shutil

    items = tiny_synthetic.split("train")
    broken = tmp_path / "broken.png"
    shutil.copy(items[0].path, broken)
    broken.write_bytes(broken.read_bytes()[:300])  # header readable, pixels not
    items = [dataclasses.replace(items[0], path=str(broken)), *items[1:]]
    config = TrainingConfig(epochs=2, fine_tune=True, batch_size=4, images_per_class=2)
    history, errors = fine_tune_model(tiny_model("gmp_fc"), items, config)
    assert [e.item for e in errors] == [items[0].image_id] and len(history) == 2
    assert "truncated or corrupt" in errors[0].problem


def test_resnet50_without_its_weights_fails_with_the_clear_error():
    from eml_core.errors import WeightsUnavailableError
    from eml_core.weights import hub_checkpoint_dir

    if any(hub_checkpoint_dir().glob("resnet50-*.pth")):
        pytest.skip("ResNet-50's ImageNet weights are in the torch hub cache on this machine")
    with pytest.raises(WeightsUnavailableError, match=r"resnet50-.*\.pth are not in the torch hub cache"):
        train_model([], TrainingConfig(backbone="resnet50", head="gmp_fc", fine_tune=True))
