"""Embedding models: a backbone (image -> feature map A) and a head (A -> embedding E).

The decomposition needs the two halves separately, so a model is always held as
``EmbeddingModel(backbone, head, preprocessing)``. Models come from

* :func:`build_model` -- torchvision backbones (``resnet50``, ``vgg16``,
  ``mobilenet_v2``; A = the last convolutional block) with a head of
  :data:`eml_core.heads.HEAD_KINDS`;
* :func:`load_model` -- a checkpoint written by :func:`save_model`;
* a user factory ``package.module:function`` returning an ``EmbeddingModel`` or a
  ``(backbone, head)`` pair (:func:`model_from_spec`).
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as functional
from torch import nn

from eml_core.errors import ArgumentError, EmlError, ImageError, ModelError
from eml_core.heads import HEAD_KINDS, build_head, head_needs_feature_size
from eml_core.weights import load_torchvision_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "eml-checkpoint/1"


@dataclass
class Preprocessing:
    """How an RGB image in [0, 1] becomes the network's input, as data.

    ``input_size`` (height, width) resizes bilinearly (antialiased); ``None``
    keeps each image's own size (fully convolutional backbones only).
    ``channel_order`` "BGR" swaps channels; ``scale`` multiplies the [0, 1]
    pixels first (255 for Caffe-style models), then ``(x - mean) / std``.
    """

    input_size: tuple[int, int] | None = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    scale: float = 1.0

    def __post_init__(self):
        if self.input_size is not None:
            self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
            if min(self.input_size) < 1:
                raise ArgumentError("input_size", f"must be positive, got {self.input_size}")
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if self.channel_order not in ("RGB", "BGR"):
            raise ArgumentError("channel_order", f"must be 'RGB' or 'BGR', got {self.channel_order!r}")

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(3, H, W)`` or ``(B, 3, H, W)`` RGB in [0, 1] -> normalised network input."""
        batched = pixels.dim() == 4
        x = pixels if batched else pixels.unsqueeze(0)
        x = x.float()
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = functional.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        if self.channel_order == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * self.scale - mean) / std
        return x if batched else x[0]

    def to_dict(self) -> dict:
        return asdict(self)


class EmbeddingModel(nn.Module):
    """``E = head(backbone(x))``, with the preprocessing that turns images into ``x``."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        preprocessing: Preprocessing | None = None,
        stride: int | None = None,
        config: dict | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.preprocessing = preprocessing or Preprocessing(input_size=None)
        self.stride = stride
        self.config = dict(config or {})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map A ``(B, C, h, w)`` the decomposition works on."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def check_input_size(self, height: int, width: int, source: str = "input") -> None:
        """Refuse images smaller than the backbone's stride (they have no feature map)."""
        if self.stride is not None and (height < self.stride or width < self.stride):
            raise ImageError(
                source,
                f"image is {width}x{height} pixels at the network input, smaller than the backbone's "
                f"stride of {self.stride} pixels, so it has no feature map to explain",
            )


def resolve_device(device: str, argument: str = "device") -> str:
    """``auto`` -> CUDA when available, else CPU; anything else must be a torch device this machine has."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ArgumentError(argument, f"expected cpu, cuda, cuda:N or auto, got {device!r}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(argument, f"{device!r} asked for, but CUDA is not available on this machine")
    return device


@contextlib.contextmanager
def inference_mode_of(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode for the block and restore each submodule's flag afterwards.

    Explanations describe the deployed model (BatchNorm running statistics, no
    Dropout); the caller's model is left exactly as found.
    """
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


# ---------------------------------------------------------------------------------------------
# torchvision backbones


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    channels: int
    stride: int


BACKBONES = {
    "resnet50": BackboneInfo("resnet50", 2048, 32),
    "vgg16": BackboneInfo("vgg16", 512, 16),
    "mobilenet_v2": BackboneInfo("mobilenet_v2", 1280, 32),
}


def build_backbone(name: str, pretrained: bool = True, allow_random_init: bool = False) -> nn.Module:
    """The torchvision network up to its last convolutional block."""
    import torchvision.models as tvm

    constructors = {
        "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
        "vgg16": (tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1),
        "mobilenet_v2": (tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1),
    }
    if name not in constructors:
        raise ArgumentError("backbone", f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    constructor, weights = constructors[name]
    if pretrained:
        try:
            network = load_torchvision_weights(constructor, weights)
        except EmlError as error:
            if not allow_random_init:
                raise
            warnings.warn(f"{error}\nFALLING BACK TO RANDOM INITIALISATION of {name} (allow_random_init=True)",
                          stacklevel=2)
            network = constructor(weights=None)
    else:
        network = constructor(weights=None)
    if name == "resnet50":
        return nn.Sequential(*list(network.children())[:-2])  # up to layer4
    if name == "vgg16":
        return network.features[:-1]  # conv5_3 + ReLU, before the last max pooling
    return network.features  # mobilenet_v2: the final 1x1 conv block (1280 channels)


def build_model(
    backbone: str = "mobilenet_v2",
    head: str = "gap_fc",
    embedding_dim: int | None = 512,
    pretrained: bool = True,
    input_size: tuple[int, int] | None = (224, 224),
    hidden_dim: int | None = None,
    allow_random_init: bool = False,
    seed: int = 0,
) -> EmbeddingModel:
    """A torchvision backbone with an embedding head.

    Pretrained ImageNet weights apply to the backbone; the head is initialised
    from ``seed`` (so two builds are identical). Where weights can't be had this
    raises :class:`~eml_core.errors.WeightsUnavailableError` unless
    ``allow_random_init`` (then it warns loudly).
    """
    if backbone not in BACKBONES:
        raise ArgumentError("backbone", f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if head not in HEAD_KINDS:
        raise ArgumentError("head", f"unknown head {head!r}; choose one of {', '.join(HEAD_KINDS)}")
    info = BACKBONES[backbone]
    if head in ("gap", "gmp", "gap_bn"):
        embedding_dim = info.channels
    network = build_backbone(backbone, pretrained=pretrained, allow_random_init=allow_random_init)
    feature_size = None
    if head_needs_feature_size(head):
        if input_size is None:
            raise ArgumentError("input_size", f"head {head!r} needs a fixed input size")
        with torch.no_grad():
            probe = network.eval()(torch.zeros(1, 3, *input_size))
        feature_size = tuple(probe.shape[-2:])
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        head_module = build_head(head, info.channels, embedding_dim, feature_size=feature_size, hidden_dim=hidden_dim)
    finally:
        torch.random.set_rng_state(generator_state)
    config = {
        "kind": "builtin",
        "backbone": backbone,
        "head": head,
        "embedding_dim": embedding_dim,
        "hidden_dim": hidden_dim,
        "input_size": list(input_size) if input_size is not None else None,
        "pretrained": pretrained,
        "seed": seed,
    }
    return EmbeddingModel(network, head_module, Preprocessing(input_size=input_size), info.stride, config).eval()


# ---------------------------------------------------------------------------------------------
# checkpoints and specs


def save_model(model: EmbeddingModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write a checkpoint (config + weights) that :func:`load_model` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": dict(model.config),
        "preprocessing": model.preprocessing.to_dict(),
        "stride": model.stride,
        "state_dict": model.state_dict(),
        "extra": dict(extra or {}),
    }
    import io

    from eml_core.atomic import write_bytes_atomic

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes_atomic(path, buffer.getvalue())


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> EmbeddingModel:
    """Rebuild a model saved by :func:`save_model` (weights-only unpickling, no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        raise ModelError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not an eml checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    config = payload["config"]
    if config.get("kind") == "builtin":
        input_size = tuple(config["input_size"]) if config.get("input_size") else None
        model = build_model(
            config["backbone"], config["head"], config.get("embedding_dim"), pretrained=False,
            input_size=input_size, hidden_dim=config.get("hidden_dim"), seed=config.get("seed", 0),
        )
    elif config.get("kind") == "factory":
        model = model_from_factory(config["factory"], **config.get("factory_kwargs", {}))
    else:
        raise ModelError(f"{path}: unknown model kind {config.get('kind')!r} in checkpoint config")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise ModelError(f"{path}: weights do not fit the model its config describes ({error})") from None
    model.config = {**model.config, **config}  # keep what the saver recorded (training recipe, ...)
    if payload.get("preprocessing"):
        model.preprocessing = Preprocessing(**payload["preprocessing"])
    model.stride = payload.get("stride", model.stride)
    check_finite_parameters(model, str(path))
    return model.eval()


def model_from_factory(factory: str, **kwargs) -> EmbeddingModel:
    """Call ``package.module:function``; it returns an EmbeddingModel or ``(backbone, head)``."""
    module_name, _, function_name = factory.partition(":")
    if not module_name or not function_name:
        raise ModelError(f"model factory {factory!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelError(f"model factory {factory!r}: cannot import {module_name!r} ({error})") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise ModelError(f"model factory {factory!r}: {module_name!r} has no attribute {function_name!r}")
    built = function(**kwargs)
    if isinstance(built, EmbeddingModel):
        model = built
    elif isinstance(built, tuple) and len(built) == 2 and all(isinstance(m, nn.Module) for m in built):
        model = EmbeddingModel(built[0], built[1], Preprocessing(input_size=None))
    else:
        raise ModelError(f"model factory {factory!r} returned {type(built).__name__}; "
                         "expected an EmbeddingModel or a (backbone, head) pair of nn.Modules")
    model.config = {"kind": "factory", "factory": factory, "factory_kwargs": dict(kwargs), **model.config}
    model.config["kind"] = "factory"
    return model.eval()


def model_from_spec(spec: str, pretrained: bool = True, allow_random_init: bool = False) -> EmbeddingModel:
    """Resolve a model spec: ``backbone:head`` (e.g. ``mobilenet_v2:gap_fc``), a checkpoint
    path, or ``package.module:factory``."""
    left, sep, right = spec.partition(":")
    if sep and left in BACKBONES:
        return build_model(left, right, pretrained=pretrained, allow_random_init=allow_random_init)
    if Path(spec).is_file():
        return load_model(spec)
    if sep and right in HEAD_KINDS:
        raise ModelError(f"model spec {spec!r}: unknown backbone {left!r}; choose one of {', '.join(BACKBONES)}")
    if sep and "/" not in left and right.isidentifier():
        return model_from_factory(spec)
    raise ModelError(
        f"model spec {spec!r}: expected 'backbone:head' (backbones: {', '.join(BACKBONES)}; heads: "
        f"{', '.join(HEAD_KINDS)}), an existing checkpoint file, or 'package.module:factory'"
    )


def check_finite_parameters(model: nn.Module, source: str) -> None:
    """Refuse models with NaN or infinite weights: every map would be NaN."""
    bad = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()]
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ModelError(f"{source}: model has non-finite (NaN or infinite) values in {len(bad)} tensors: {shown}")
