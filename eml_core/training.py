"""Metric-learning training with pytorch-metric-learning losses.

The default recipe runs in a few minutes on 2 CPU cores: an ImageNet-pretrained
backbone, **frozen**, whose feature maps are computed once and cached (with a
horizontally flipped copy of every image as augmentation), and a head (by
default ``gap_fc``) trained on the cached maps with Multi-Similarity loss
(Wang et al. 2019) and its miner, or Triplet loss with semi-hard mining, over
batches of m images per class (``MPerClassSampler``). ``fine_tune=True`` trains
the whole network on images instead (meant for GPUs): images are decoded batch by
batch by a ``DataLoader`` (``loader_workers`` processes), never held in memory all
at once, and ``amp=True`` runs the forward pass under bfloat16 autocast.

The paper-like configuration is ``backbone="resnet50", head="gmp_fc",
embedding_dim=512, fine_tune=True`` (the paper fine-tunes BN-Inception with a GMP
head, a 512-d FC layer and Multi-Similarity loss; BN-Inception weights are not to
be had offline, ResNet-50 is the closest torchvision backbone with ImageNet weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from eml_core.batches import equal_shape_batches, load_batch
from eml_core.datasets import ErrorRecord, Item
from eml_core.errors import ArgumentError, EmlError
from eml_core.images import load_image
from eml_core.models import EmbeddingModel, build_model, inference_mode_of

LOSSES = ("multi_similarity", "triplet")
EpochCallback = Callable[[int, float], None]


@dataclass
class TrainingConfig:
    backbone: str = "mobilenet_v2"
    head: str = "gap_fc"
    embedding_dim: int = 512
    loss: str = "multi_similarity"
    epochs: int = 30
    batch_size: int = 32
    images_per_class: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    input_size: tuple[int, int] = (224, 224)
    fine_tune: bool = False
    flip_augment: bool = True
    pretrained: bool = True
    amp: bool = False            # fine-tuning only: bfloat16 autocast of the forward pass (fast on recent GPUs)
    loader_workers: int = 0      # fine-tuning only: DataLoader processes decoding images (0: in this process)

    def __post_init__(self):
        from eml_core.heads import HEAD_KINDS
        from eml_core.models import BACKBONES

        if self.loss not in LOSSES:
            raise ArgumentError("loss", f"expected one of {LOSSES}, got {self.loss!r}")
        if self.backbone not in BACKBONES:
            raise ArgumentError("backbone", f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.head not in HEAD_KINDS:
            raise ArgumentError("head", f"unknown head {self.head!r}; choose one of {', '.join(HEAD_KINDS)}")
        for name, low, high in (("embedding_dim", 1, 65_536), ("epochs", 1, 100_000), ("batch_size", 2, 65_536),
                                ("images_per_class", 2, 1024), ("seed", 0, 2**32 - 1), ("loader_workers", 0, 256)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ArgumentError(name, f"must be a whole number in [{low}, {high}], got {value!r}")
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ArgumentError(name, f"must be a finite number >= 0, got {value!r}")
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if min(self.input_size) < 1:
            raise ArgumentError("input_size", f"must be positive, got {self.input_size}")

    def to_dict(self) -> dict:
        return {**asdict(self), "input_size": list(self.input_size)}


@dataclass
class TrainingReport:
    config: dict
    loss_history: list[float] = field(default_factory=list)
    train_items: int = 0
    errors: list[ErrorRecord] = field(default_factory=list)


def loss_and_miner(name: str):
    from pytorch_metric_learning import losses, miners

    if name == "multi_similarity":
        return losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5), miners.MultiSimilarityMiner(epsilon=0.1)
    return losses.TripletMarginLoss(margin=0.1), miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard")


def cache_feature_maps(model: EmbeddingModel, items: list[Item], batch_size: int = 32, device: str = "cpu",
                       flip: bool = True, stage: str = "cache_features"):
    """Backbone feature maps of the readable items (and of their mirror images when ``flip``)."""
    errors: list[ErrorRecord] = []
    kept, tensors = load_batch(items, model, stage, errors)
    maps = []
    with inference_mode_of(model), torch.no_grad():
        for _, batch in equal_shape_batches(tensors, batch_size):
            batch = batch.to(device)
            maps.append(model.features(batch).cpu())
            if flip:
                maps.append(model.features(batch.flip(-1)).cpu())
    labels = []
    for start, batch in equal_shape_batches(tensors, batch_size):
        chunk = [item.label for item in kept[start:start + len(batch)]]
        labels.extend(chunk + chunk if flip else chunk)
    feature_maps = torch.cat(maps) if maps else torch.zeros(0)
    return kept, feature_maps, torch.tensor(labels, dtype=torch.long), errors


def _sampler(labels: torch.Tensor, config: TrainingConfig):
    from pytorch_metric_learning.samplers import MPerClassSampler

    classes = len(torch.unique(labels))
    # a batch holds m images of each of several classes, and no more images than there are
    batch = min(config.batch_size, config.images_per_class * classes, len(labels))
    batch -= batch % config.images_per_class
    if batch < 2 * config.images_per_class or classes < 2:
        # one class per batch would give the losses no negative pair: nothing to learn
        raise ArgumentError("images_per_class", f"batches of {batch} images hold fewer than 2 classes of "
                                                f"{config.images_per_class} images ({len(labels)} images of {classes} "
                                                f"classes); lower images_per_class or add data")
    return MPerClassSampler(labels, m=config.images_per_class, batch_size=batch,
                            length_before_new_iter=len(labels)), batch


def _optimise(network: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, config: TrainingConfig,
              parameter_groups, device: str, augment=None, on_epoch: EpochCallback | None = None) -> list[float]:
    """The shared loop: m-per-class batches, loss on mined pairs/triplets, AdamW; mean loss per epoch
    (reported to ``on_epoch(epoch, mean loss)`` as it goes, e.g. for a progress bar)."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # MPerClassSampler draws from numpy's global generator
    loss_function, miner = loss_and_miner(config.loss)
    sampler, batch_size = _sampler(labels, config)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, labels), batch_size=batch_size,
                                         sampler=sampler, drop_last=True)
    network.to(device).train()
    optimiser = torch.optim.AdamW(parameter_groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    history = []
    for epoch in range(config.epochs):
        losses = []
        for batch, batch_labels in loader:
            if augment is not None:
                batch = augment(batch)
            batch, batch_labels = batch.to(device), batch_labels.to(device)
            embeddings = network(batch)
            loss = loss_function(embeddings, batch_labels, miner(embeddings, batch_labels))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)) if losses else float("nan"))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    network.eval()
    return history


def fit_head(head: torch.nn.Module, feature_maps: torch.Tensor, labels: torch.Tensor, config: TrainingConfig,
             device: str = "cpu", on_epoch: EpochCallback | None = None) -> list[float]:
    """Train ``head`` on cached feature maps; returns the mean loss of each epoch."""
    trainable = [p for p in head.parameters() if p.requires_grad]
    return _optimise(head, feature_maps, labels, config, trainable, device, on_epoch=on_epoch)


def _random_mirror(batch: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(len(batch)) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)


class ImageFiles(torch.utils.data.Dataset):
    """Items decoded and preprocessed one at a time (in DataLoader workers when asked): a dataset of any size
    streams from disk. An unreadable image yields ``None`` and its error text instead of stopping the epoch."""

    def __init__(self, items: list[Item], preprocessing, check_input_size):
        self.items, self.preprocessing, self.check_input_size = items, preprocessing, check_input_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            tensor = self.preprocessing(load_image(item.path).pixels)
            self.check_input_size(tensor.shape[-2], tensor.shape[-1], item.path)
        except EmlError as error:
            return None, item.label, index, str(error)
        return tensor, item.label, index, None


def _collate_readable(samples):
    """Stack the readable samples of a batch; report the others as ``(index, problem)``."""
    readable = [s for s in samples if s[0] is not None]
    failed = [(s[2], s[3]) for s in samples if s[0] is None]
    if not readable:
        return None, None, failed
    return torch.stack([s[0] for s in readable]), torch.tensor([s[1] for s in readable]), failed


def fine_tune_model(model: EmbeddingModel, items: list[Item], config: TrainingConfig, device: str = "cpu",
                    on_epoch: EpochCallback | None = None) -> tuple[list[float], list[ErrorRecord]]:
    """Train backbone and head end to end on images, streamed from disk (random mirroring; the backbone at a
    tenth of the head's learning rate). GPU-aware: pinned memory and non-blocking copies on CUDA, bfloat16
    autocast with ``config.amp``. An image that cannot be read is an error record (once) and its batch goes on
    without it; the m-per-class batches are drawn from the labels, so nothing is decoded ahead of time."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # MPerClassSampler draws from numpy's global generator
    labels = torch.tensor([item.label for item in items])
    sampler, batch_size = _sampler(labels, config)
    on_cuda = torch.device(device).type == "cuda"
    loader = torch.utils.data.DataLoader(
        ImageFiles(items, model.preprocessing, model.check_input_size), batch_size=batch_size, sampler=sampler,
        drop_last=True, num_workers=config.loader_workers, collate_fn=_collate_readable, pin_memory=on_cuda,
        persistent_workers=config.loader_workers > 0)
    loss_function, miner = loss_and_miner(config.loss)
    model.to(device).train()
    groups = [{"params": model.backbone.parameters(), "lr": config.learning_rate * 0.1},
              {"params": model.head.parameters(), "lr": config.learning_rate}]
    optimiser = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    failed: dict[int, str] = {}
    history = []
    for epoch in range(config.epochs):
        losses = []
        for batch, batch_labels, problems in loader:
            failed.update(problems)
            if batch is None or len(torch.unique(batch_labels)) < 2:  # no negative pair left to learn from
                continue
            batch = _random_mirror(batch).to(device, non_blocking=on_cuda)
            batch_labels = batch_labels.to(device, non_blocking=on_cuda)
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=config.amp):
                embeddings = model(batch)
            embeddings = embeddings.float()  # the loss in full precision
            loss = loss_function(embeddings, batch_labels, miner(embeddings, batch_labels))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)) if losses else float("nan"))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    model.eval()
    errors = [ErrorRecord("fine_tune", items[index].image_id, items[index].path, None, problem)
              for index, problem in sorted(failed.items())]
    return history, errors


def train_model(items: list[Item], config: TrainingConfig | None = None, device: str = "cpu",
                allow_random_init: bool = False, on_epoch: EpochCallback | None = None
                ) -> tuple[EmbeddingModel, TrainingReport]:
    """Build the model of ``config`` (default recipe if None) and train it on ``items`` (their labels); returns
    it in eval mode."""
    config = config or TrainingConfig()
    model = build_model(config.backbone, config.head, config.embedding_dim, pretrained=config.pretrained,
                        input_size=config.input_size, seed=config.seed, allow_random_init=allow_random_init)
    model.to(device)
    report = TrainingReport(config=config.to_dict())
    if config.fine_tune:
        report.loss_history, report.errors = fine_tune_model(model, items, config, device, on_epoch)
        report.train_items = len(items) - len({e.item for e in report.errors})
    else:
        kept, maps, labels, report.errors = cache_feature_maps(model, items, config.batch_size, device,
                                                               config.flip_augment)
        report.train_items = len(kept)
        report.loss_history = fit_head(model.head, maps, labels, config, device, on_epoch)
    model.config.update({"training": config.to_dict(), "final_loss": report.loss_history[-1]
                         if report.loss_history else None})
    return model.eval(), report
