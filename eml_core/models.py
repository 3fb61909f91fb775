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
import math
import os
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
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
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
    """``auto`` -> CUDA when available, else CPU; else ``cpu``, ``cuda`` or ``cuda:N`` that this machine has."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device) if isinstance(device, str) else None
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ArgumentError(argument, f"expected cpu, cuda, cuda:N or auto, got {device!r}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError(argument, f"{device!r} asked for, but CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ArgumentError(argument, f"{device!r} asked for, but this machine has "
                                          f"{torch.cuda.device_count()} CUDA device(s)")
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


def _torchvision_constructors() -> dict:
    import torchvision.models as tvm

    return {
        "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
        "vgg16": (tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1),
        "mobilenet_v2": (tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1),
    }


def check_pretrained_weights(backbone: str) -> None:
    """Fail fast, before a run starts, when the ImageNet weights of ``backbone`` are neither in the torch hub
    cache nor downloadable (:class:`~eml_core.errors.WeightsUnavailableError`, saying how to get them)."""
    from eml_core.weights import ensure_weights_file

    if backbone in BACKBONES:
        ensure_weights_file(_torchvision_constructors()[backbone][1])


def build_backbone(name: str, pretrained: bool = True, allow_random_init: bool = False) -> nn.Module:
    """The torchvision network up to its last convolutional block."""
    constructors = _torchvision_constructors()
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


TRUSTED_FACTORIES_VARIABLE = "EML_TRUSTED_FACTORIES"

# Limits on what a checkpoint's config may ask for: a hostile file must not make us allocate terabytes.
MAX_EMBEDDING_DIM = 65_536
MAX_INPUT_SIDE = 16_384
SCALAR_TYPES = (bool, int, float, str, type(None))


def trusted_factories() -> set[str]:
    """Model factories the user trusts to be named by a file (``EML_TRUSTED_FACTORIES``, comma-separated).

    A checkpoint or a results manifest is data: it may *name* a factory, but the
    factory runs only when the caller passes the same name (``load_model(...,
    factory=...)``, ``eml ... --model-factory``) or lists it here.
    """
    return {name.strip() for name in os.environ.get(TRUSTED_FACTORIES_VARIABLE, "").split(",") if name.strip()}


def trust_factory(factory: str) -> None:
    """Add a factory to :func:`trusted_factories` for this process and the processes it starts (flow workers)."""
    names = trusted_factories() | {factory}
    os.environ[TRUSTED_FACTORIES_VARIABLE] = ",".join(sorted(names))


def _check_factory_allowed(factory: object, source: str, passed: str | None) -> str:
    if not isinstance(factory, str):
        raise ModelError(f"{source}: model factory must be a string, got {type(factory).__name__}")
    if passed is not None and passed != factory:
        raise ModelError(f"{source}: the checkpoint was saved from factory {factory!r}, not {passed!r}")
    if passed is None and factory not in trusted_factories():
        raise ModelError(
            f"{source}: names the model factory {factory!r}; a file never chooses code to run. If you trust that "
            f"code, pass the same factory (CLI: --model-factory {factory}) or list it in {TRUSTED_FACTORIES_VARIABLE}")
    return factory


def _scalar_kwargs(kwargs: object, source: str) -> dict:
    """Factory arguments stored in a file: a mapping of names to JSON scalars (no objects, no nesting)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise ModelError(f"{source}: factory_kwargs must map argument names to values")
    bad = [k for k, v in kwargs.items() if not isinstance(v, SCALAR_TYPES)]
    if bad:
        raise ModelError(f"{source}: factory_kwargs {bad} are not plain numbers, strings or booleans")
    return dict(kwargs)


def _bounded_int(value: object, name: str, source: str, low: int, high: int, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ModelError(f"{source}: config field {name!r} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _builtin_from_config(config: dict, source: str) -> "EmbeddingModel":
    """Rebuild a ``build_model`` network from a checkpoint's config, every field checked first."""
    backbone, head = config.get("backbone"), config.get("head")
    if backbone not in BACKBONES:
        raise ModelError(f"{source}: config names unknown backbone {backbone!r}")
    if head not in HEAD_KINDS:
        raise ModelError(f"{source}: config names unknown head {head!r}")
    size = config.get("input_size")
    if size is not None:
        if not (isinstance(size, (list, tuple)) and len(size) == 2):
            raise ModelError(f"{source}: config field 'input_size' must be [height, width] or null, got {size!r}")
        size = tuple(_bounded_int(v, "input_size", source, 1, MAX_INPUT_SIDE, optional=False) for v in size)
    return build_model(
        backbone, head, _bounded_int(config.get("embedding_dim"), "embedding_dim", source, 1, MAX_EMBEDDING_DIM),
        pretrained=False, input_size=size,
        hidden_dim=_bounded_int(config.get("hidden_dim"), "hidden_dim", source, 1, MAX_EMBEDDING_DIM),
        seed=_bounded_int(config.get("seed", 0), "seed", source, 0, 2**63 - 1, optional=False) or 0,
    )


def _preprocessing_from_payload(saved: object, source: str) -> "Preprocessing":
    if not isinstance(saved, dict) or not set(saved) <= set(Preprocessing.__dataclass_fields__):
        raise ModelError(f"{source}: 'preprocessing' must be a mapping of "
                         f"{', '.join(Preprocessing.__dataclass_fields__)}")
    try:
        size = saved.get("input_size")
        if size is not None and (not isinstance(size, (list, tuple)) or len(size) != 2
                                 or not all(isinstance(v, int) and 0 < v <= MAX_INPUT_SIDE for v in size)):
            raise ValueError(f"input_size must be [height, width] of at most {MAX_INPUT_SIDE}, got {size!r}")
        preprocessing = Preprocessing(**saved)
        values = (*preprocessing.mean, *preprocessing.std, float(preprocessing.scale))
        if len(preprocessing.mean) != 3 or len(preprocessing.std) != 3 or not all(math.isfinite(v) for v in values) \
                or min(preprocessing.std) <= 0:
            raise ValueError("mean and std need 3 finite values each, std > 0, and a finite scale")
    except (ArgumentError, TypeError, ValueError) as error:
        raise ModelError(f"{source}: invalid 'preprocessing' ({error})") from None
    return preprocessing


MODEL_KINDS = ("builtin", "factory")


def _read_checkpoint(path: Path, map_location, mmap: bool = False, kinds: tuple[str, ...] = MODEL_KINDS) -> dict:
    """The checkpoint's payload, weights-only; every malformed file is one ModelError naming it.

    ``kinds``: the config kinds the caller can rebuild (single models here; ``crossview`` in
    :mod:`eml_core.crossview_model`)."""
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        if mmap:  # an older (non-zip) serialisation cannot be memory-mapped: read it whole
            return _read_checkpoint(path, map_location, kinds=kinds)
        raise ModelError(f"{path}: not a readable checkpoint ({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not an eml checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if not isinstance(payload.get("config"), dict):
        raise ModelError(f"{path}: checkpoint 'config' must be a mapping")
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ModelError(f"{path}: checkpoint 'state_dict' must map parameter names to tensors")
    kind = payload["config"].get("kind")
    if kind not in kinds:
        if kind == "crossview":
            raise ModelError(f"{path}: is a two-branch cross-view checkpoint; load it with "
                             f"eml_core.crossview_model.load_crossview_model")
        if kind in MODEL_KINDS:
            raise ModelError(f"{path}: is a single-branch model checkpoint (kind {kind!r}), not a cross-view one; "
                             f"load it with eml_core.models.load_model")
        raise ModelError(f"{path}: unknown model kind {kind!r} in checkpoint config")
    return payload


def check_checkpoint(path: str | Path, factory: str | None = None) -> None:
    """What :func:`load_model` checks before building anything (format, kind, factory trust), memory-mapped:
    cheap enough to run on the command line before a flow starts."""
    payload = _read_checkpoint(Path(path), "cpu", mmap=True)
    if payload["config"]["kind"] == "factory":
        _check_factory_allowed(payload["config"].get("factory"), str(path), factory)
        _scalar_kwargs(payload["config"].get("factory_kwargs"), str(path))


def recorded_config(spec: str) -> dict:
    """The config a checkpoint file records (backbone, head, the training recipe under ``training``...), read
    without building the model or running any code; ``{}`` for a spec that is not a file."""
    if not isinstance(spec, str) or not Path(spec).is_file():
        return {}
    return dict(_read_checkpoint(Path(spec), "cpu", mmap=True)["config"])


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               factory: str | None = None) -> EmbeddingModel:
    """Rebuild a model saved by :func:`save_model`.

    The file is data, never code: tensors are read with weights-only unpickling,
    every config field is checked, and a checkpoint saved from a user factory is
    rebuilt only when the caller passes that same ``factory`` (or lists it in
    ``EML_TRUSTED_FACTORIES``); its stored arguments may only be plain scalars.
    """
    path = Path(path)
    source = str(path)
    payload = _read_checkpoint(path, map_location)
    config, state_dict = payload["config"], payload["state_dict"]
    if config["kind"] == "builtin":
        model = _builtin_from_config(config, source)
    else:
        name = _check_factory_allowed(config.get("factory"), source, factory)
        model = model_from_factory(name, **_scalar_kwargs(config.get("factory_kwargs"), source))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ModelError(f"{path}: weights do not fit the model its config describes ({str(error)[:300]})") from None
    model.config = {**model.config, **config}  # keep what the saver recorded (training recipe, ...)
    if payload.get("preprocessing"):
        model.preprocessing = _preprocessing_from_payload(payload["preprocessing"], source)
    stride = payload.get("stride", model.stride)
    model.stride = _bounded_int(stride, "stride", source, 1, MAX_INPUT_SIDE)
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
    if function is None or not callable(function):
        raise ModelError(f"model factory {factory!r}: {module_name!r} has no function {function_name!r}")
    try:
        built = function(**kwargs)
    except TypeError as error:  # arguments that do not fit the factory's signature
        raise ModelError(f"model factory {factory!r}: cannot call it with {sorted(kwargs)} ({error})") from None
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


def model_from_spec(spec: str, pretrained: bool = True, allow_random_init: bool = False,
                    factory: str | None = None, from_file: str | None = None) -> EmbeddingModel:
    """Resolve a model spec: ``backbone:head`` (e.g. ``mobilenet_v2:gap_fc``), a checkpoint
    path, or ``package.module:factory``.

    ``factory`` is the caller's factory for a checkpoint saved from one. When the
    spec itself was read from a file (``from_file`` names it, e.g. a results
    manifest), a ``package.module:factory`` spec runs only if it is in
    :func:`trusted_factories`: a file never chooses code to run.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"model spec {spec!r}: expected a non-empty string")
    left, sep, right = spec.partition(":")
    if sep and left in BACKBONES:
        return build_model(left, right, pretrained=pretrained, allow_random_init=allow_random_init)
    if Path(spec).is_file():
        return load_model(spec, factory=factory)
    if sep and right in HEAD_KINDS:
        raise ModelError(f"model spec {spec!r}: unknown backbone {left!r}; choose one of {', '.join(BACKBONES)}")
    if is_factory_spec(spec):
        if from_file is not None:
            _check_factory_allowed(spec, f"{from_file}: model spec", None)
        return model_from_factory(spec)
    raise ModelError(
        f"model spec {spec!r}: expected 'backbone:head' (backbones: {', '.join(BACKBONES)}; heads: "
        f"{', '.join(HEAD_KINDS)}), an existing checkpoint file, or 'package.module:factory'"
    )


def is_factory_spec(spec: str) -> bool:
    """``package.module:function`` (dotted identifiers, one colon), not a path."""
    module_name, sep, function = spec.partition(":")
    return bool(sep) and function.isidentifier() and all(part.isidentifier() for part in module_name.split("."))


def check_model_spec(spec: str, factory: str | None = None, must_exist: bool = True) -> None:
    """Cheap checks of a spec before a flow starts: names, file existence, factory trust. Builds nothing.

    Without ``must_exist`` only the form is checked (a deployment's checkpoint path names a file on the
    worker, checked there)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"model spec {spec!r}: expected a non-empty string")
    left, sep, right = spec.partition(":")
    if sep and left in BACKBONES:
        if right not in HEAD_KINDS:
            raise ArgumentError("head", f"unknown head {right!r}; choose one of {', '.join(HEAD_KINDS)}")
        return
    if Path(spec).is_file():
        check_checkpoint(spec, factory)
        return
    if is_factory_spec(spec):
        return
    if sep and right in HEAD_KINDS:
        raise ModelError(f"model spec {spec!r}: unknown backbone {left!r}; choose one of {', '.join(BACKBONES)}")
    if not must_exist and ("/" in spec or spec.endswith((".pt", ".pth"))):
        return
    if Path(spec).exists():
        raise ModelError(f"model spec {spec!r}: is not a file")
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
