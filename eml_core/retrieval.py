"""Embeddings of a dataset, Recall@K, and the pairs that localization explains.

Recall@K (the metric-learning convention): the share of queries with at least
one image of their own class among their K nearest neighbours (cosine), the
query itself excluded. Neighbours come from pytorch-metric-learning's
``CustomKNN``; Recall@1 equals its ``AccuracyCalculator`` precision_at_1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from eml_core.batches import equal_shape_batches, load_batch
from eml_core.datasets import ErrorRecord, Item
from eml_core.errors import EmlError
from eml_core.models import EmbeddingModel, inference_mode_of

RECALL_KS = (1, 2, 4, 8)


def embed_items(model: EmbeddingModel, items: list[Item], batch_size: int = 32, device: str = "cpu",
                stage: str = "embed") -> tuple[list[Item], torch.Tensor, list[ErrorRecord]]:
    """Embeddings (N, l) of the readable items, on the CPU, with the errors of the rest."""
    errors: list[ErrorRecord] = []
    kept, tensors = load_batch(items, model, stage, errors)
    outputs = []
    with inference_mode_of(model), torch.no_grad():
        for _, batch in equal_shape_batches(tensors, batch_size):
            outputs.append(model(batch.to(device)).float().cpu())
    dim = outputs[0].shape[1] if outputs else 0
    return kept, (torch.cat(outputs) if outputs else torch.zeros(0, dim)), errors


def nearest_neighbours(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (N, k) of each row's k most cosine-similar other rows (pytorch-metric-learning's CustomKNN)."""
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.inference import CustomKNN

    k = min(k, len(embeddings) - 1)
    _, indices = CustomKNN(CosineSimilarity())(embeddings, k, embeddings, ref_includes_query=True)
    return indices


def recall_at_k(embeddings: torch.Tensor, labels, ks=RECALL_KS) -> dict[int, float]:
    """Recall@K for each K in ``ks`` (query excluded from its own neighbours)."""
    labels = torch.as_tensor(np.asarray(labels))
    if len(embeddings) < 2:
        return {k: float("nan") for k in ks}
    indices = nearest_neighbours(embeddings, max(ks))
    hits = labels[indices] == labels.unsqueeze(1)
    return {k: float(hits[:, :k].any(1).double().mean()) for k in ks}


@dataclass(frozen=True)
class Pair:
    pair_id: str
    query: Item
    retrieved: Item
    similarity: float


def same_class_pairs(items: list[Item], embeddings: torch.Tensor | None = None, mode: str = "nearest",
                     seed: int = 0) -> tuple[list[Pair], list[ErrorRecord]]:
    """One pair per image: its most similar other image of the same class and split (``mode="nearest"``),
    or a seeded random one (``mode="random"``). Images alone in their class and split are reported."""
    if mode not in ("nearest", "random"):
        raise EmlError(f"pairing: expected 'nearest' or 'random', got {mode!r}")
    if mode == "nearest" and (embeddings is None or len(embeddings) != len(items)):
        raise EmlError("pairing 'nearest' needs one embedding per item")
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, str], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault((item.label, item.split), []).append(index)
    unit = torch.nn.functional.normalize(embeddings, dim=1) if embeddings is not None else None
    pairs, errors = [], []
    for index, item in enumerate(items):
        partners = [j for j in groups[(item.label, item.split)] if j != index]
        if not partners:
            errors.append(ErrorRecord("pairing", item.image_id, item.path, None,
                                      f"no other image of class {item.label} in the {item.split} split to pair with",
                                      "warning"))
            continue
        if mode == "nearest":
            assert unit is not None  # checked above: nearest pairing has embeddings
            scores = unit[partners] @ unit[index]
            best = partners[int(torch.argmax(scores))]
            similarity = float(scores.max())
        else:
            best = partners[int(rng.integers(len(partners)))]
            similarity = float("nan") if unit is None else float(unit[best] @ unit[index])
        pairs.append(Pair(f"{item.image_id}-{items[best].image_id}", item, items[best], similarity))
    return pairs, errors


def region_rankings(model: EmbeddingModel, queries: list[Item], gallery: list[Item], top_k: int = 8,
                    device: str = "cpu"):
    """Rank ``gallery`` for each query's box region by partial similarity, and by whole-image similarity.

    Returns ``(table, errors)``; the table has one row per (query, method, rank) in the schema
    retrieval studies read (``amt.build.RANKINGS_COLUMNS`` plus ``query_label``, ``gallery_label``):
    methods ``partial_similarity`` (f . E_g / (|E_q| |E_g|), f the query's position embeddings
    averaged over its box) and ``overall_similarity`` (cosine of the embeddings). The query is
    never its own result; gallery embeddings are computed once.
    """
    import pandas as pd

    from eml_core.decomposition import partial_similarity
    from eml_core.feature_maps import compute_feature_map
    from eml_core.position_embeddings import position_embeddings
    from eml_core.sampling import box_weights

    kept_gallery, gallery_embeddings, errors = embed_items(model, gallery, device=device, stage="rankings")
    kept_queries, tensors = load_batch([q for q in queries if q.box is not None], model, "rankings", errors)
    unit_gallery = torch.nn.functional.normalize(gallery_embeddings, dim=1)
    rows = []
    with inference_mode_of(model), torch.no_grad():
        for query, tensor in zip(kept_queries, tensors, strict=True):
            feature_map = compute_feature_map(model, tensor.unsqueeze(0).to(device), query.path)
            pe = position_embeddings(model.head, feature_map)
            weights = box_weights([query.box], query.size, pe.feature_size).to(pe.features)
            f = torch.einsum("kn,bnl->bkl", weights, pe.features)
            scores = {
                "partial_similarity": partial_similarity(f, pe.embedding, gallery_embeddings.to(f))[0, 0].cpu(),
                "overall_similarity": (unit_gallery @ torch.nn.functional.normalize(pe.embedding.cpu(), dim=1)[0]),
            }
            for method, values in scores.items():
                order = [i for i in torch.argsort(values, descending=True).tolist()
                         if kept_gallery[i].image_id != query.image_id][:top_k]
                for rank, index in enumerate(order, start=1):
                    match = kept_gallery[index]
                    rows.append({"query_id": query.image_id, "query_image": query.path, "box_x0": query.box[0],
                                 "box_y0": query.box[1], "box_x1": query.box[2], "box_y1": query.box[3],
                                 "method": method, "rank": rank, "gallery_id": match.image_id,
                                 "gallery_image": match.path, "score": float(values[index]),
                                 "query_label": query.label, "gallery_label": match.label})
    return pd.DataFrame(rows), errors
