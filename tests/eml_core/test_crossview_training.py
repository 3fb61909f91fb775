"""Cross-view training: CVM-Net's loss against a brute-force loop and pytorch-metric-learning, Recall@K against a
reference loop, rotation augmentation in the cached features, and both training regimes end to end (tiny)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as functional

from eml_core.crossview_training import (
    CrossViewTrainingConfig,
    cache_pair_features,
    fit_shared_projection,
    recall_at_k,
    top_percent_k,
    train_crossview,
    weighted_soft_margin_triplet_loss,
)
from eml_core.errors import ArgumentError
from eml_core.orientation import rotate_aerial
from tests.conftest import tiny_crossview_model


def _embeddings(seed, batch=6, dim=5):
    g = torch.Generator().manual_seed(seed)
    return (functional.normalize(torch.randn(batch, dim, generator=g), dim=1),
            functional.normalize(torch.randn(batch, dim, generator=g), dim=1))


@pytest.mark.parametrize("alpha", [1.0, 10.0])
def test_loss_matches_a_brute_force_loop(alpha):
    street, aerial = _embeddings(0)
    terms_s2a, terms_a2s = [], []
    for i in range(6):
        for j in range(6):
            if i != j:
                d = lambda s, a: float(((street[s] - aerial[a]) ** 2).sum())  # noqa: E731
                terms_s2a.append(math.log1p(math.exp(alpha * (d(i, i) - d(i, j)))))   # panorama i, aerial j negative
                terms_a2s.append(math.log1p(math.exp(alpha * (d(j, j) - d(i, j)))))   # aerial j, panorama i negative
    expected = (sum(terms_s2a) / len(terms_s2a) + sum(terms_a2s) / len(terms_a2s)) / 2
    assert float(weighted_soft_margin_triplet_loss(street, aerial, alpha)) == pytest.approx(expected, rel=1e-5)


def test_loss_matches_pytorch_metric_learning_soft_margin_triplets():
    """Each direction is PML's smooth triplet loss over all in-batch triplets (margin 0, squared L2), with the
    embeddings scaled by sqrt(alpha) to weight the distances by alpha."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import TripletMarginLoss

    street, aerial = _embeddings(1)
    alpha = 10.0
    pml = TripletMarginLoss(margin=0.0, smooth_loss=True, distance=LpDistance(power=2, normalize_embeddings=False))
    # every in-batch triplet (anchor i, its positive i in the other view, negative j != i), given explicitly: PML's
    # own label-based triplets would drop i == i as "the same sample" when labels equal ref_labels
    i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    off = i != j
    triplets = (i[off], i[off], j[off])
    s, a = street * math.sqrt(alpha), aerial * math.sqrt(alpha)
    expected = (pml(s, indices_tuple=triplets, ref_emb=a) + pml(a, indices_tuple=triplets, ref_emb=s)) / 2
    assert torch.allclose(weighted_soft_margin_triplet_loss(street, aerial, alpha), expected, atol=1e-5)


def test_loss_refuses_a_batch_without_negatives():
    with pytest.raises(ArgumentError, match="at least 2 pairs"):
        weighted_soft_margin_triplet_loss(*_embeddings(0, batch=1))
    with pytest.raises(ArgumentError, match="embeddings"):
        weighted_soft_margin_triplet_loss(torch.zeros(3, 4), torch.zeros(3, 5))


def test_recall_matches_a_reference_loop():
    g = torch.Generator().manual_seed(2)
    street = torch.randn(150, 4, generator=g)
    aerial = street + 1.2 * torch.randn(150, 4, generator=g)
    rows = {r["at"]: r for r in recall_at_k(street, aerial)}
    s, a = functional.normalize(street, dim=1), functional.normalize(aerial, dim=1)
    ranks = []
    for i in range(150):
        truth = float(s[i] @ a[i])
        ranks.append(sum(1 for j in range(150) if float(s[i] @ a[j]) > truth))
    for at, k in (("1", 1), ("5", 5), ("10", 10), ("1%", 2)):
        assert rows[at]["k"] == k and rows[at]["recall"] == pytest.approx(sum(r < k for r in ranks) / 150)
    assert 0 < rows["1"]["recall"] < rows["10"]["recall"] < 1 and rows["1"]["count"] == 150
    assert top_percent_k(8884) == 89 and recall_at_k(torch.zeros(0, 4), torch.zeros(0, 4)) == []


def test_cached_features_hold_one_copy_per_rotation(tiny_crossview, tiny_crossview_dataset):
    pairs = tiny_crossview_dataset.pairs[:2]
    rotations = {pairs[0].pair_id: [0.0, 90.0, 33.0], pairs[1].pair_id: [10.0, 20.0, 30.0]}
    kept, street, aerial, errors = cache_pair_features(tiny_crossview, pairs, rotations)
    assert kept == pairs and errors == [] and street.shape == (2, 6) and aerial.shape == (2, 3, 6)
    assert not torch.allclose(aerial[0, 0], aerial[0, 1])
    from eml_core.crossview_data import load_pair_pixels

    pixels = load_pair_pixels(pairs[0])
    expected = tiny_crossview.aerial.head[:-1](tiny_crossview.aerial.features(
        tiny_crossview.aerial.preprocessing(rotate_aerial(pixels.aerial, 33.0))[None]))
    assert torch.allclose(aerial[0, 2], expected[0], atol=1e-6)
    _, _, unrotated, _ = cache_pair_features(tiny_crossview, pairs, None)
    assert unrotated.shape == (2, 1, 6) and torch.allclose(unrotated[0, 0], aerial[0, 0], atol=1e-6)


def test_fit_shared_projection_learns_to_match_views():
    """Pooled features of two 'views' related by a fixed linear map, plus noise: the shared projection learns a
    common space; loss falls and Recall@1 rises."""
    g = torch.Generator().manual_seed(0)
    content = torch.randn(40, 12, generator=g)
    mixing = torch.randn(12, 12, generator=g) * 0.3 + torch.eye(12)
    street = content + 0.1 * torch.randn(40, 12, generator=g)
    aerial = torch.stack([content @ mixing + 0.1 * torch.randn(40, 12, generator=g) for _ in range(3)], 1)
    torch.manual_seed(0)
    projection = torch.nn.Linear(12, 8)
    before = recall_at_k(projection(street).detach(), projection(aerial[:, 0]).detach())[0]["recall"]
    config = CrossViewTrainingConfig(epochs=40, batch_size=10, learning_rate=1e-2)
    history = fit_shared_projection(projection, street, aerial, config)
    after = recall_at_k(projection(street).detach(), projection(aerial[:, 0]).detach())[0]["recall"]
    assert len(history) == 40 and history[-1] < history[0] * 0.5 and after > before and after >= 0.8
    assert not projection.training


def test_train_crossview_cached_regime_end_to_end(tiny_crossview_dataset):
    model = tiny_crossview_model(seed=1)
    backbone_before = model.street.backbone[0].weight.clone()
    projection_before = model.street.head[-1].weight.clone()
    config = CrossViewTrainingConfig(epochs=3, batch_size=2, rotations_per_aerial=2, learning_rate=1e-2)
    trained, report = train_crossview(tiny_crossview_dataset.split("train"), tiny_crossview_dataset.split("val"),
                                      config, model=model)
    assert report.train_pairs == 4 and report.validation_pairs == 2 and report.errors == []
    assert len(report.loss_history) == 3 and len(report.validation_recall_at_1) == 3 and len(report.epoch_seconds) == 3
    assert [r["at"] for r in report.recalls] == ["1", "5", "10", "1%"] and report.recalls[2]["recall"] == 1.0
    assert torch.equal(trained.street.backbone[0].weight, backbone_before)        # frozen
    assert not torch.equal(trained.street.head[-1].weight, projection_before)   # trained, shared
    assert trained.aerial.head[-1] is trained.street.head[-1]
    assert trained.config["training"]["rotations_per_aerial"] == 2 and not trained.training


def test_fine_tune_regime_trains_the_backbones_and_reports_bad_pairs(tiny_crossview_dataset, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"no image")
    pairs = tiny_crossview_dataset.split("train") + [replace(tiny_crossview_dataset.pairs[-1], aerial=str(broken))]
    model = tiny_crossview_model(seed=2)
    before = [model.street.backbone[0].weight.clone(), model.aerial.backbone[0].weight.clone()]
    config = CrossViewTrainingConfig(epochs=2, batch_size=5, fine_tune=True, learning_rate=1e-2,
                                     backbone_learning_rate=1e-2)
    trained, report = train_crossview(pairs, tiny_crossview_dataset.split("val"), config, model=model)
    assert len(report.loss_history) == 2 and all(math.isfinite(v) for v in report.loss_history)
    assert not torch.equal(trained.street.backbone[0].weight, before[0])
    assert not torch.equal(trained.aerial.backbone[0].weight, before[1])
    assert len(report.errors) == 1 and "broken.png" in report.errors[0].problem
    assert report.validation_pairs == 2 and len(report.recalls) == 4


def test_config_is_checked():
    with pytest.raises(ArgumentError, match="backbone"):
        CrossViewTrainingConfig(backbone="alexnet")
    with pytest.raises(ArgumentError, match="aerial_fill"):
        CrossViewTrainingConfig(aerial_fill="black")
    with pytest.raises(ArgumentError, match="batch_size"):
        CrossViewTrainingConfig(batch_size=1)
    with pytest.raises(ArgumentError, match="loss_weight"):
        CrossViewTrainingConfig(loss_weight=float("nan"))
    with pytest.raises(ArgumentError, match="nn.Linear shared by both heads"):
        from eml_core.crossview_model import CrossViewModel
        from tests.conftest import tiny_model

        train_crossview([], None, CrossViewTrainingConfig(epochs=1), model=CrossViewModel(tiny_model("gap_fc"),
                                                                                          tiny_model("gap_fc")))
