"""Recall@K against a brute-force loop and pytorch-metric-learning; same-class pairing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eml_core.datasets import Item
from eml_core.retrieval import recall_at_k, same_class_pairs


def _brute_force_recall(embeddings, labels, k):
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    hits = 0
    for i in range(len(labels)):
        scores = [(float(unit[i] @ unit[j]), j) for j in range(len(labels)) if j != i]
        top = [j for _, j in sorted(scores, key=lambda s: -s[0])[:k]]
        hits += any(labels[j] == labels[i] for j in top)
    return hits / len(labels)


def test_recall_at_k_matches_brute_force_and_pml_precision_at_1():
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(40, 6, generator=g)
    labels = [i % 7 for i in range(40)]
    recall = recall_at_k(embeddings, labels, ks=(1, 2, 4, 8))
    for k, value in recall.items():
        assert value == pytest.approx(_brute_force_recall(embeddings, labels, k), abs=1e-6)
    calculator = AccuracyCalculator(include=("precision_at_1",), knn_func=CustomKNN(CosineSimilarity()),
                                    device=torch.device("cpu"))
    pml = calculator.get_accuracy(embeddings, torch.tensor(labels))["precision_at_1"]
    assert abs(pml - recall[1]) < 1e-6


def _items(labels, splits):
    return [Item(str(i), f"/x/{i}.png", f"{i}.png", label, split, (0, 0, 1, 1), (4, 4))
            for i, (label, split) in enumerate(zip(labels, splits, strict=True))]


def test_nearest_pairs_stay_in_class_and_split():
    items = _items([1, 1, 1, 2, 2, 3], ["train", "train", "test", "train", "train", "train"])
    embeddings = torch.tensor([[1.0, 0], [0.9, 0.1], [1.0, 0], [0, 1.0], [0.1, 1.0], [1.0, 1.0]])
    pairs, errors = same_class_pairs(items, embeddings)
    partners = {p.query.image_id: p.retrieved.image_id for p in pairs}
    assert partners == {"0": "1", "1": "0", "3": "4", "4": "3"}
    # image 2 is alone in class 1 / test, image 5 alone in class 3: reported, not dropped silently
    assert sorted(e.item for e in errors) == ["2", "5"] and all(e.severity == "warning" for e in errors)


def test_random_pairs_are_seeded():
    items = _items([1] * 6, ["train"] * 6)
    first, _ = same_class_pairs(items, None, mode="random", seed=3)
    second, _ = same_class_pairs(items, None, mode="random", seed=3)
    assert [p.pair_id for p in first] == [p.pair_id for p in second]
    assert all(p.query.image_id != p.retrieved.image_id for p in first)
    np.testing.assert_equal(len(first), 6)
    # another seed draws other partners; every partner is of the same class and split
    items = _items([1] * 10 + [2] * 10, ["test"] * 20)
    draws = {seed: [p.pair_id for p in same_class_pairs(items, None, mode="random", seed=seed)[0]]
             for seed in (0, 0, 1)}
    assert len(draws) == 2 and draws[0] != draws[1]
    pairs, _ = same_class_pairs(items, None, mode="random", seed=1)
    assert all(p.query.label == p.retrieved.label and p.query.split == p.retrieved.split for p in pairs)
