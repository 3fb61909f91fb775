r"""The two-branch street-to-aerial network of the paper's geo-localization experiment (Section VII-A).

CVM-Net style, as in the authors' code: two **unshared** backbones (VGG16 in
the paper; any backbone of :func:`eml_core.models.build_model`, MobileNetV2 by
default since only its ImageNet weights install offline here), global average
pooling, **one** fully connected layer shared by both views (-> 4096), and L2
normalisation (cosine similarity):

.. math::  E_s = W\,\mathrm{GAP}(A_s) + b,\quad E_a = W\,\mathrm{GAP}(A_a) + b,\quad
           S = \frac{E_s \cdot E_a}{|E_s|\,|E_a|}.

Each branch is an :class:`~eml_core.models.EmbeddingModel` (its own backbone and
preprocessing: panorama 224x1232, aerial 512x512 by default) whose head is
``GAP -> Flatten -> W``, the same ``nn.Linear`` object in both, so the
decomposition's closed form applies to each side and
``explain_pair(street, panorama, aerial, retrieved_model=aerial)`` explains a
pair (:meth:`CrossViewModel.explain`; the panorama is the *query* side).

Checkpoints (:func:`save_crossview_model` / :func:`load_crossview_model`) use
the format of :func:`eml_core.models.save_model` with config kind
``crossview``: a builtin network is rebuilt from its checked config, a
factory's only when the caller names the same factory or trusts it
(``EML_TRUSTED_FACTORIES``), tensors are read weights-only, and the two stored
copies of the shared layer must agree. A file never chooses code to run.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as functional
from torch import nn

from eml_core.errors import ArgumentError, ModelError
from eml_core.models import (
    BACKBONES,
    CHECKPOINT_FORMAT,
    MAX_EMBEDDING_DIM,
    MAX_INPUT_SIDE,
    EmbeddingModel,
    Preprocessing,
    _bounded_int,
    _check_factory_allowed,
    _preprocessing_from_payload,
    _read_checkpoint,
    _scalar_kwargs,
    build_backbone,
    check_finite_parameters,
    is_factory_spec,
    trusted_factories,
)

CROSSVIEW_KIND = "crossview"
PANORAMA_SIZE = (224, 1232)
AERIAL_SIZE = (512, 512)
BRANCHES = ("street", "aerial")


class CrossViewModel(nn.Module):
    """Two :class:`EmbeddingModel` branches: ``street`` (panoramas) and ``aerial``."""

    def __init__(self, street: EmbeddingModel, aerial: EmbeddingModel, config: dict | None = None):
        super().__init__()
        if not isinstance(street, EmbeddingModel) or not isinstance(aerial, EmbeddingModel):
            raise ModelError("a cross-view model needs two EmbeddingModel branches (street, aerial)")
        self.street = street
        self.aerial = aerial
        self.config = dict(config or {})

    @property
    def shares_projection(self) -> bool:
        """Whether both heads end in the same ``nn.Linear`` object (the paper's shared FC)."""
        street = _last_linear(self.street.head)
        return street is not None and street is _last_linear(self.aerial.head)

    def embed(self, branch: str, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of preprocessed ``images`` through ``branch``."""
        model = self.branch(branch)
        return functional.normalize(model(images), dim=-1)

    def branch(self, name: str) -> EmbeddingModel:
        if name not in BRANCHES:
            raise ArgumentError("branch", f"expected one of {BRANCHES}, got {name!r}")
        return self.street if name == "street" else self.aerial

    def forward(self, panorama: torch.Tensor, aerial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed("street", panorama), self.embed("aerial", aerial)

    def explain(self, panorama: torch.Tensor, aerial: torch.Tensor, similarity: str = "cosine"):
        """:func:`~eml_core.decomposition.explain_pair` with the panorama as query, the aerial image as retrieved."""
        from eml_core.decomposition import explain_pair

        return explain_pair(self.street, panorama, aerial, similarity=similarity, retrieved_model=self.aerial)


def _last_linear(head: nn.Module) -> nn.Linear | None:
    layers = list(head) if isinstance(head, nn.Sequential) else [head]
    return layers[-1] if layers and isinstance(layers[-1], nn.Linear) else None


def crossview_head(shared: nn.Linear) -> nn.Sequential:
    """``GAP -> Flatten -> shared``: the head of one branch."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), shared)


def build_crossview_model(
    backbone: str = "mobilenet_v2",
    embedding_dim: int = 4096,
    panorama_size: tuple[int, int] | None = PANORAMA_SIZE,
    aerial_size: tuple[int, int] | None = AERIAL_SIZE,
    pretrained: bool = True,
    allow_random_init: bool = False,
    seed: int = 0,
) -> CrossViewModel:
    """Two torchvision backbones (each with its own copy of the ImageNet weights), GAP, one shared FC."""
    if backbone not in BACKBONES:
        raise ArgumentError("backbone", f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if not isinstance(embedding_dim, int) or not 1 <= embedding_dim <= MAX_EMBEDDING_DIM:
        raise ArgumentError("embedding_dim", f"must be an integer in [1, {MAX_EMBEDDING_DIM}], got {embedding_dim!r}")
    info = BACKBONES[backbone]
    branches = {name: build_backbone(backbone, pretrained=pretrained, allow_random_init=allow_random_init)
                for name in BRANCHES}
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        shared = nn.Linear(info.channels, embedding_dim)
    finally:
        torch.random.set_rng_state(state)
    sizes = {"street": panorama_size, "aerial": aerial_size}
    models = {name: EmbeddingModel(branches[name], crossview_head(shared), Preprocessing(input_size=sizes[name]),
                                   info.stride, {"kind": CROSSVIEW_KIND, "branch": name})
              for name in BRANCHES}
    config = {
        "kind": CROSSVIEW_KIND, "source": "builtin", "backbone": backbone, "embedding_dim": embedding_dim,
        "panorama_size": list(panorama_size) if panorama_size else None,
        "aerial_size": list(aerial_size) if aerial_size else None, "pretrained": pretrained, "seed": seed,
    }
    return CrossViewModel(models["street"], models["aerial"], config).eval()


def crossview_from_factory(factory: str, **kwargs) -> CrossViewModel:
    """Call ``package.module:function``: it returns a :class:`CrossViewModel` or ``(street, aerial)`` models."""
    import importlib

    module_name, _, function_name = factory.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ModelError(f"cross-view model factory {factory!r}: cannot load it ({error})") from None
    try:
        built = function(**kwargs)
    except TypeError as error:
        raise ModelError(f"cross-view model factory {factory!r}: cannot call it with {sorted(kwargs)} "
                         f"({error})") from None
    if isinstance(built, tuple) and len(built) == 2:
        built = CrossViewModel(*built)
    if not isinstance(built, CrossViewModel):
        raise ModelError(f"cross-view model factory {factory!r} returned {type(built).__name__}; expected a "
                         f"CrossViewModel or a (street, aerial) pair of EmbeddingModels")
    built.config = {**built.config, "kind": CROSSVIEW_KIND, "source": "factory", "factory": factory,
                    "factory_kwargs": dict(kwargs)}
    return built.eval()


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_crossview_model(model: CrossViewModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write a checkpoint (config, both preprocessings and strides, weights) that :func:`load_crossview_model` reads."""
    from eml_core.atomic import write_bytes_atomic

    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": {**model.config, "kind": CROSSVIEW_KIND},
        "preprocessing": {name: model.branch(name).preprocessing.to_dict() for name in BRANCHES},
        "stride": {name: model.branch(name).stride for name in BRANCHES},
        "state_dict": model.state_dict(),
        "extra": dict(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes_atomic(Path(path), buffer.getvalue())


def _required_int(value: object, name: str, source: str, low: int, high: int) -> int:
    return cast(int, _bounded_int(value, name, source, low, high, optional=False))


def _size(value: object, name: str, source: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ModelError(f"{source}: config field {name!r} must be [height, width] or null, got {value!r}")
    return (_required_int(value[0], name, source, 1, MAX_INPUT_SIDE),
            _required_int(value[1], name, source, 1, MAX_INPUT_SIDE))


def load_crossview_model(path: str | Path, map_location: str | torch.device = "cpu",
                         factory: str | None = None) -> CrossViewModel:
    """Rebuild a model saved by :func:`save_crossview_model`; every malformed file is one ModelError naming it."""
    path = Path(path)
    source = str(path)
    payload = _read_checkpoint(path, map_location, kinds=(CROSSVIEW_KIND,))
    config, state_dict = payload["config"], payload["state_dict"]
    origin = config.get("source")
    if origin == "builtin":
        backbone = config.get("backbone")
        if backbone not in BACKBONES:
            raise ModelError(f"{source}: config names unknown backbone {backbone!r}")
        model = build_crossview_model(
            backbone, _required_int(config.get("embedding_dim"), "embedding_dim", source, 1, MAX_EMBEDDING_DIM),
            _size(config.get("panorama_size"), "panorama_size", source), _size(config.get("aerial_size"), "aerial_size",
                                                                               source),
            pretrained=False, seed=_required_int(config.get("seed", 0), "seed", source, 0, 2**63 - 1))
    elif origin == "factory":
        name = _check_factory_allowed(config.get("factory"), source, factory)
        model = crossview_from_factory(name, **_scalar_kwargs(config.get("factory_kwargs"), source))
    else:
        raise ModelError(f"{source}: cross-view checkpoint has unknown source {origin!r} (expected builtin or factory)")
    _check_shared_copies(model, state_dict, source)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        problem = " ".join(str(error).split())[:300]  # torch's message spans lines; errors are one line
        raise ModelError(f"{path}: weights do not fit the model its config describes ({problem})") from None
    model.config = {**model.config, **config}
    preprocessing, strides = payload.get("preprocessing"), payload.get("stride")
    for name in BRANCHES:
        branch = model.branch(name)
        if isinstance(preprocessing, dict) and preprocessing.get(name):
            branch.preprocessing = _preprocessing_from_payload(preprocessing[name], f"{source} ({name} branch)")
        if isinstance(strides, dict) and name in strides:
            branch.stride = _bounded_int(strides[name], "stride", source, 1, MAX_INPUT_SIDE)
    check_finite_parameters(model, source)
    return model.eval()


def _check_shared_copies(model: CrossViewModel, state_dict: dict, source: str) -> None:
    """A module shared by both branches is saved twice; a file whose two copies differ is refused (loading
    would silently keep one of them)."""
    street, aerial = dict(model.street.named_parameters()), dict(model.aerial.named_parameters())
    for name, parameter in street.items():
        if name in aerial and aerial[name] is parameter:
            keys = (f"street.{name}", f"aerial.{name}")
            if all(k in state_dict for k in keys):
                a, b = (state_dict[k] for k in keys)
                if a.shape != b.shape or not torch.equal(a, b):
                    raise ModelError(f"{source}: the street and aerial copies of the shared layer {name!r} differ")


def crossview_model_from_spec(spec: str, pretrained: bool = True, allow_random_init: bool = False,
                              factory: str | None = None, from_file: str | None = None) -> CrossViewModel:
    """Resolve a cross-view model spec: a backbone name (``mobilenet_v2``: a new two-branch network), a
    checkpoint path, or ``package.module:factory`` (run only if named by the caller, or, for a spec read from a
    file (``from_file``), trusted in ``EML_TRUSTED_FACTORIES``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"cross-view model spec {spec!r}: expected a non-empty string")
    if spec in BACKBONES:
        return build_crossview_model(spec, pretrained=pretrained, allow_random_init=allow_random_init)
    if Path(spec).is_file():
        return load_crossview_model(spec, factory=factory)
    if is_factory_spec(spec):
        if from_file is not None and spec not in trusted_factories():
            _check_factory_allowed(spec, f"{from_file}: model spec", None)
        return crossview_from_factory(spec)
    raise ModelError(f"cross-view model spec {spec!r}: expected a backbone ({', '.join(BACKBONES)}), an existing "
                     f"checkpoint file, or 'package.module:factory'")


def check_crossview_model_spec(spec: str, factory: str | None = None, must_exist: bool = True) -> None:
    """Cheap checks of a cross-view model spec before a flow starts (names, the checkpoint's format, kind and
    factory trust, memory-mapped); builds nothing. Without ``must_exist`` only the form is checked (a
    deployment's checkpoint path names a file on the worker, checked there)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"cross-view model spec {spec!r}: expected a non-empty string")
    if spec in BACKBONES:
        return
    left, sep, _ = spec.partition(":")
    if sep and left in BACKBONES:
        raise ModelError(f"cross-view model spec {spec!r}: name the backbone alone ({left}); the two-branch "
                         f"network's head is always GAP and one FC shared by both branches")
    path = Path(spec)
    if path.is_file():
        payload = _read_checkpoint(path, "cpu", mmap=True, kinds=(CROSSVIEW_KIND,))
        origin = payload["config"].get("source")
        if origin == "factory":
            _check_factory_allowed(payload["config"].get("factory"), spec, factory)
            _scalar_kwargs(payload["config"].get("factory_kwargs"), spec)
        elif origin != "builtin":
            raise ModelError(f"{spec}: cross-view checkpoint has unknown source {origin!r} (expected builtin or "
                             f"factory)")
        return
    if is_factory_spec(spec):
        return
    if not must_exist and ("/" in spec or spec.endswith((".pt", ".pth"))):
        return
    if path.exists():
        raise ModelError(f"cross-view model spec {spec!r}: is not a file")
    raise ModelError(f"cross-view model spec {spec!r}: expected a backbone ({', '.join(BACKBONES)}), an existing "
                     f"checkpoint file, or 'package.module:factory'")
