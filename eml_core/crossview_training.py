r"""Training the two-branch cross-view model: CVM-Net's loss, rotated aerial images, Recall@K.

**Loss** (Hu et al., CVM-Net, CVPR 2018: the weighted soft-margin triplet
loss, in-batch negatives). For a batch of B aligned pairs with L2-normalised
embeddings s_i (street) and a_j (aerial), :math:`d_{ij} = |s_i - a_j|^2 = 2 - 2 s_i \cdot a_j`:

.. math::
   L = \tfrac12\Big(\frac{1}{B(B-1)} \sum_{i \ne j} \log\big(1 + e^{\alpha (d_{ii} - d_{ij})}\big)
     + \frac{1}{B(B-1)} \sum_{i \ne j} \log\big(1 + e^{\alpha (d_{jj} - d_{ij})}\big)\Big),\quad \alpha = 10:

every other aerial image of the batch is a negative for each panorama
(street-to-aerial) and every other panorama for each aerial image. CVM-Net's
code also sums the diagonal terms, each the constant log 2; they carry no
gradient and are left out here.

**Rotation** (paper Section VII-A): aerial images are rotated by random angles
during training, so the model becomes approximately rotation-invariant and a
rotated aerial image still matches its panorama -- what the orientation
experiment needs. Rotation is :func:`eml_core.orientation.rotate_aerial` on the
decoded pixels, before preprocessing (reflection fill by default).

**Two regimes.**

* Cached (default; runs on CPU in minutes): the backbones stay frozen at
  their ImageNet weights and only the shared FC is trained. The head is
  ``GAP -> FC``, so the loss depends on a feature map only through its GAP
  vector: those are computed once -- for each training panorama, and for each
  training aerial image at ``rotations_per_aerial`` random angles (drawn from
  the seed and the pair id) -- and every epoch draws one of the rotated copies
  per pair. Exactly equivalent to training the head on the full maps.
* ``fine_tune=True`` (meant for GPUs and the full CVUSA): both backbones and
  the FC train end to end on images, each aerial image rotated by a fresh
  random angle every time it is drawn.

**Recall@K** (street-to-aerial retrieval, CVUSA's protocol): each validation
panorama ranks every validation aerial image (unrotated) by cosine
similarity; Recall@K is the share whose own aerial image is among the top K,
for K = 1, 5, 10 and top 1% (K = floor(N / 100) + 1, CVM-Net's rule). Ties
count in the truth's favour (CVM-Net counts only strictly closer images).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import cast

import numpy as np
import torch
import torch.nn.functional as functional
from torch import nn

from eml_core.crossview_data import CrossViewPair, load_pair_pixels
from eml_core.crossview_model import CrossViewModel, build_crossview_model
from eml_core.datasets import ErrorRecord
from eml_core.errors import ArgumentError, EmlError
from eml_core.models import inference_mode_of
from eml_core.orientation import FILLS, random_rotations, rotate_aerial

RECALL_AT = (1, 5, 10)


# ---------------------------------------------------------------------------------------------
# loss and metrics


def weighted_soft_margin_triplet_loss(street: torch.Tensor, aerial: torch.Tensor, alpha: float = 10.0
                                      ) -> torch.Tensor:
    """CVM-Net's loss on a batch of aligned pairs (row i of each is pair i); see the module docstring.

    ``street`` and ``aerial`` are ``(B, l)``, L2-normalised by the caller (the
    model's embeddings). Needs B >= 2 (a batch of one pair has no negative).
    """
    if street.shape != aerial.shape or street.dim() != 2:
        raise ArgumentError("embeddings", f"expected two (B, l) tensors of one shape, got {tuple(street.shape)} "
                                          f"and {tuple(aerial.shape)}")
    batch = street.shape[0]
    if batch < 2:
        raise ArgumentError("batch_size", "the loss needs at least 2 pairs per batch (in-batch negatives)")
    distance = 2.0 - 2.0 * street @ aerial.T            # d[i, j] = |s_i - a_j|^2
    positive = distance.diagonal()
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=street.device)
    street_to_aerial = functional.softplus(alpha * (positive.unsqueeze(1) - distance))[off_diagonal].mean()
    aerial_to_street = functional.softplus(alpha * (positive.unsqueeze(0) - distance))[off_diagonal].mean()
    return (street_to_aerial + aerial_to_street) / 2


def top_percent_k(count: int) -> int:
    """K of Recall@1%: ``floor(count / 100) + 1`` (CVM-Net)."""
    return int(count * 0.01) + 1


def recall_at_k(street: torch.Tensor, aerial: torch.Tensor, at=RECALL_AT, top_percent: bool = True) -> list[dict]:
    """Street-to-aerial Recall@K of N aligned pairs: rows ``{"at", "k", "recall", "count"}``.

    ``street`` and ``aerial`` ``(N, l)``; pair i is (street[i], aerial[i]). The
    truth's rank is the number of aerial images strictly more similar than it.
    """
    street = functional.normalize(street.float(), dim=1)
    aerial = functional.normalize(aerial.float(), dim=1)
    count = street.shape[0]
    if count == 0:
        return []
    similarity = street @ aerial.T
    truth = similarity.diagonal().unsqueeze(1)
    rank = (similarity > truth).sum(1)                    # 0 = ranked first
    rows = [{"at": str(k), "k": int(k), "recall": float((rank < k).float().mean()), "count": count} for k in at]
    if top_percent:
        k = top_percent_k(count)
        rows.append({"at": "1%", "k": k, "recall": float((rank < k).float().mean()), "count": count})
    return rows


# ---------------------------------------------------------------------------------------------
# configuration and report


@dataclass
class CrossViewTrainingConfig:
    backbone: str = "mobilenet_v2"
    embedding_dim: int = 4096
    panorama_size: tuple[int, int] = (224, 1232)
    aerial_size: tuple[int, int] = (512, 512)
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    backbone_learning_rate: float = 1e-5       # fine_tune only
    weight_decay: float = 1e-4
    loss_weight: float = 10.0                  # alpha of the weighted soft-margin loss
    rotations_per_aerial: int = 4              # cached regime: rotated copies of each training aerial image
    aerial_fill: str = "reflect"
    seed: int = 0
    fine_tune: bool = False
    pretrained: bool = True
    num_workers: int = 0                       # fine_tune: DataLoader workers decoding images

    def __post_init__(self):
        from eml_core.models import BACKBONES

        if self.backbone not in BACKBONES:
            raise ArgumentError("backbone", f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.aerial_fill not in FILLS:
            raise ArgumentError("aerial_fill", f"expected one of {FILLS}, got {self.aerial_fill!r}")
        for name, low, high in (("embedding_dim", 1, 65_536), ("epochs", 1, 100_000), ("batch_size", 2, 65_536),
                                ("rotations_per_aerial", 1, 360), ("seed", 0, 2**32 - 1), ("num_workers", 0, 256)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ArgumentError(name, f"must be a whole number in [{low}, {high}], got {value!r}")
        for name in ("learning_rate", "backbone_learning_rate", "weight_decay", "loss_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ArgumentError(name, f"must be a finite number >= 0, got {value!r}")
        for name in ("panorama_size", "aerial_size"):
            size = getattr(self, name)
            if not (isinstance(size, (list, tuple)) and len(size) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
                raise ArgumentError(name, f"must be (height, width) in pixels, got {size!r}")
            setattr(self, name, (int(size[0]), int(size[1])))

    def to_dict(self) -> dict:
        return {**asdict(self), "panorama_size": list(self.panorama_size), "aerial_size": list(self.aerial_size)}


@dataclass
class CrossViewTrainingReport:
    config: dict
    loss_history: list[float] = field(default_factory=list)
    validation_recall_at_1: list[float] = field(default_factory=list)   # after each epoch (cached regime)
    recalls: list[dict] = field(default_factory=list)                   # final, validation split
    train_pairs: int = 0
    validation_pairs: int = 0
    cache_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# cached features


def _head_layers(model: CrossViewModel, branch: str) -> nn.Sequential:
    head = model.branch(branch).head
    if not isinstance(head, nn.Sequential) or len(head) < 2 or not isinstance(head[-1], nn.Linear):
        raise ArgumentError("model", "cached training needs both heads to end in one shared nn.Linear after their "
                                     "pooling (GAP -> Flatten -> FC); train other models with fine_tune=True")
    return head


def shared_projection(model: CrossViewModel) -> nn.Linear:
    """The FC both branches share (the only layer the cached regime trains)."""
    street, aerial = _head_layers(model, "street"), _head_layers(model, "aerial")
    if street[-1] is not aerial[-1]:
        raise ArgumentError("model", "cached training needs one nn.Linear shared by both heads (the paper's layout); "
                                     "train other models with fine_tune=True")
    return cast(nn.Linear, street[-1])


def _pooled(model: CrossViewModel, branch: str, images: torch.Tensor) -> torch.Tensor:
    """What the shared FC sees: the branch's head up to (not including) its last layer."""
    return _head_layers(model, branch)[:-1](model.branch(branch).features(images))


def cache_pair_features(model: CrossViewModel, pairs: list[CrossViewPair], rotations: dict[str, list[float]] | None,
                        fill: str = "reflect", batch_size: int = 16, device: str = "cpu",
                        stage: str = "cache_features"):
    """Pooled features of each readable pair: panoramas ``(N, C)`` and aerial images ``(N, R, C)``, one per
    angle in ``rotations[pair_id]`` (or unrotated when ``rotations`` is None). Unreadable pairs are error rows."""
    errors: list[ErrorRecord] = []
    kept: list[CrossViewPair] = []
    street_inputs, aerial_inputs = [], []
    for pair in pairs:
        try:
            pixels = load_pair_pixels(pair)
            angles = rotations[pair.pair_id] if rotations is not None else [0.0]
            street_inputs.append(model.street.preprocessing(pixels.panorama))
            aerial_inputs.append(torch.stack([model.aerial.preprocessing(rotate_aerial(pixels.aerial, angle, fill))
                                              for angle in angles]))
            kept.append(pair)
        except EmlError as error:
            errors.append(ErrorRecord(stage, pair.pair_id, getattr(error, "path", None), None, str(error)))
    street, aerial = [], []
    with inference_mode_of(model), torch.no_grad():
        for start in range(0, len(kept), batch_size):
            batch = torch.stack(street_inputs[start:start + batch_size]).to(device)
            street.append(_pooled(model, "street", batch).cpu())
            rotated = torch.cat(aerial_inputs[start:start + batch_size]).to(device)
            aerial.append(_pooled(model, "aerial", rotated).cpu().view(len(batch), -1, street[-1].shape[-1]))
    if not kept:
        return kept, torch.zeros(0), torch.zeros(0), errors
    return kept, torch.cat(street), torch.cat(aerial), errors


def fit_shared_projection(projection: nn.Linear, street: torch.Tensor, aerial: torch.Tensor,
                          config: CrossViewTrainingConfig, device: str = "cpu",
                          validation: tuple[torch.Tensor, torch.Tensor] | None = None,
                          report: CrossViewTrainingReport | None = None) -> list[float]:
    """Train the shared FC on cached pooled features: ``street`` ``(N, C)``, ``aerial`` ``(N, R, C)``.

    Each epoch visits every pair once in a random order, with one of its R
    rotated aerial copies drawn at random. Returns the mean loss per epoch.
    """
    count = street.shape[0]
    batch_size = min(config.batch_size, count)
    if batch_size < 2:
        raise ArgumentError("train pairs", f"need at least 2 readable training pairs, got {count}")
    generator = torch.Generator().manual_seed(config.seed)
    projection.to(device).train()
    optimiser = torch.optim.AdamW(projection.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history = []
    for _ in range(config.epochs):
        started = time.perf_counter()
        order = torch.randperm(count, generator=generator)
        choice = torch.randint(aerial.shape[1], (count,), generator=generator)
        losses = []
        for start in range(0, count - batch_size + 1, batch_size):  # full batches: equal numbers of negatives
            index = order[start:start + batch_size]
            s = functional.normalize(projection(street[index].to(device)), dim=1)
            a = functional.normalize(projection(aerial[index, choice[index]].to(device)), dim=1)
            loss = weighted_soft_margin_triplet_loss(s, a, config.loss_weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        if report is not None:
            report.epoch_seconds.append(time.perf_counter() - started)
            if validation is not None and len(validation[0]) > 0:
                with torch.no_grad():
                    projection.eval()
                    rows = recall_at_k(projection(validation[0].to(device)), projection(validation[1].to(device)),
                                       at=(1,), top_percent=False)
                    projection.train()
                report.validation_recall_at_1.append(rows[0]["recall"])
    projection.eval()
    return history


# ---------------------------------------------------------------------------------------------
# end-to-end fine-tuning (GPUs)


class _PairImages(torch.utils.data.Dataset):
    """Preprocessed (panorama, rotated aerial) of a pair; the angle is drawn from (seed, epoch, index)."""

    def __init__(self, model: CrossViewModel, pairs: list[CrossViewPair], config: CrossViewTrainingConfig):
        self.street_preprocessing = model.street.preprocessing
        self.aerial_preprocessing = model.aerial.preprocessing
        self.pairs, self.config, self.epoch = pairs, config, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        pair = self.pairs[index]
        try:
            pixels = load_pair_pixels(pair)
        except EmlError as error:
            return str(error)
        angle = float(np.random.default_rng([self.config.seed, self.epoch, index]).uniform(0, 360))
        aerial = rotate_aerial(pixels.aerial, angle, self.config.aerial_fill)
        return self.street_preprocessing(pixels.panorama), self.aerial_preprocessing(aerial)


def _collate(items):
    good = [item for item in items if not isinstance(item, str)]
    bad = [item for item in items if isinstance(item, str)]
    if not good:
        return None, None, bad
    return torch.stack([g[0] for g in good]), torch.stack([g[1] for g in good]), bad


def fine_tune_crossview(model: CrossViewModel, pairs: list[CrossViewPair], config: CrossViewTrainingConfig,
                        device: str = "cpu", report: CrossViewTrainingReport | None = None
                        ) -> tuple[list[float], list[ErrorRecord]]:
    """Train both backbones and the shared FC end to end (random rotation of every aerial image drawn)."""
    dataset = _PairImages(model, pairs, config)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         num_workers=config.num_workers, collate_fn=_collate,
                                         generator=torch.Generator().manual_seed(config.seed))
    shared_ids = {id(p) for p in model.street.head.parameters()}
    backbones = [p for p in model.parameters() if id(p) not in shared_ids]
    optimiser = torch.optim.AdamW([{"params": backbones, "lr": config.backbone_learning_rate},
                                   {"params": list(model.street.head.parameters()), "lr": config.learning_rate}],
                                  weight_decay=config.weight_decay)
    model.to(device).train()
    history, errors, reported = [], [], set()
    for epoch in range(config.epochs):
        started = time.perf_counter()
        dataset.epoch = epoch
        losses = []
        for street, aerial, bad in loader:
            for problem in bad:
                if problem not in reported:
                    reported.add(problem)
                    errors.append(ErrorRecord("fine_tune", None, None, None, problem))
            if street is None or len(street) < 2:
                continue
            s, a = model(street.to(device), aerial.to(device))
            loss = weighted_soft_margin_triplet_loss(s, a, config.loss_weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)) if losses else float("nan"))
        if report is not None:
            report.epoch_seconds.append(time.perf_counter() - started)
    model.eval()
    return history, errors


# ---------------------------------------------------------------------------------------------
# the entry point


def embed_pairs(model: CrossViewModel, pairs: list[CrossViewPair], batch_size: int = 16, device: str = "cpu",
                stage: str = "embed"):
    """L2-normalised embeddings of each readable pair's panorama and unrotated aerial image:
    ``(kept, street (N, l), aerial (N, l), errors)``."""
    kept, street, aerial, errors = cache_pair_features(model, pairs, None, batch_size=batch_size, device=device,
                                                       stage=stage)
    if not kept:
        return kept, torch.zeros(0), torch.zeros(0), errors
    projection = shared_projection(model)
    with torch.no_grad():
        return (kept, functional.normalize(projection(street.to(device)), dim=1).cpu(),
                functional.normalize(projection(aerial[:, 0].to(device)), dim=1).cpu(), errors)


def train_crossview(train_pairs: list[CrossViewPair], validation_pairs: list[CrossViewPair] | None = None,
                    config: CrossViewTrainingConfig | None = None, device: str = "cpu",
                    allow_random_init: bool = False, model: CrossViewModel | None = None
                    ) -> tuple[CrossViewModel, CrossViewTrainingReport]:
    """Build (or take) the two-branch model and train it; returns it in eval mode and a report.

    The report holds the loss per epoch, seconds per epoch and for the feature
    cache, validation Recall@1 after each epoch (cached regime) and the final
    validation Recall@1/5/10/1% rows, and the error rows of unreadable pairs.
    """
    config = config or CrossViewTrainingConfig()
    if model is None:
        model = build_crossview_model(config.backbone, config.embedding_dim, config.panorama_size, config.aerial_size,
                                      pretrained=config.pretrained, allow_random_init=allow_random_init,
                                      seed=config.seed)
    model.to(device)
    report = CrossViewTrainingReport(config=config.to_dict())
    validation_pairs = validation_pairs or []
    if config.fine_tune:
        report.loss_history, report.errors = fine_tune_crossview(model, train_pairs, config, device, report)
        report.train_pairs = len(train_pairs)
    else:
        projection = shared_projection(model)
        started = time.perf_counter()
        rotations = random_rotations([p.pair_id for p in train_pairs], config.rotations_per_aerial, config.seed)
        kept, street, aerial, report.errors = cache_pair_features(model, train_pairs, rotations, config.aerial_fill,
                                                                  device=device, stage="train_crossview")
        validation = None
        if validation_pairs:
            _, v_street, v_aerial, v_errors = cache_pair_features(model, validation_pairs, None, device=device,
                                                                  stage="validate_crossview")
            report.errors.extend(v_errors)
            validation = (v_street, v_aerial[:, 0] if len(v_aerial) else v_aerial)
        report.cache_seconds = time.perf_counter() - started
        report.train_pairs = len(kept)
        report.loss_history = fit_shared_projection(projection, street, aerial, config, device, validation, report)
        if validation is not None and len(validation[0]):
            with torch.no_grad():
                report.recalls = recall_at_k(projection(validation[0].to(device)), projection(validation[1].to(device)))
            report.validation_pairs = len(validation[0])
    if config.fine_tune and validation_pairs:
        kept, street, aerial, errors = embed_pairs(model, validation_pairs, device=device, stage="validate_crossview")
        report.errors.extend(errors)
        report.validation_pairs = len(kept)
        report.recalls = recall_at_k(street, aerial)
    model.config.update({"training": config.to_dict(),
                         "final_loss": report.loss_history[-1] if report.loss_history else None,
                         "validation_recalls": report.recalls})
    return model.eval(), report
