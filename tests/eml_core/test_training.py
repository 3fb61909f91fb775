"""Training: pytorch-metric-learning losses on cached features; the checkpoint reads back."""

from __future__ import annotations

import pytest
import torch

from eml_core import load_model, save_model
from eml_core.heads import build_head
from eml_core.training import TrainingConfig, fit_head, train_model


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
