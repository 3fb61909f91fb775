r"""Sanity checks for similarity explanations: cascading model randomization (Adebayo et al., NeurIPS 2018).

An explanation of the model's similarity must change when the model does. The
check re-initialises the model's layers one at a time, cumulatively, from the
top: first the head's parameterised layers (from the output back), then the
backbone's blocks from the top down (:func:`randomization_layers` names them in
order). At each depth k (the first k layers randomized) every map method's map
of every pair is recomputed and compared with its map under the trained model:

* Spearman rank correlation (``scipy.stats.spearmanr``) between the **raw**
  signed maps at feature resolution (upsampling adds no information; a sign
  flip counts as a change);
* SSIM (``skimage.metrics.structural_similarity``, data range 1, 7x7 window)
  between the **presented** maps (rectified, upsampled to the network input
  size, divided by the max: what a user sees).

A method whose maps keep a high similarity to the trained model's while the
model is randomized explains something other than the model (e.g. the image's
edges) and fails the check (:func:`sanity_verdicts`).

Re-initialisation follows Quantus and Adebayo et al.: each module's own
``reset_parameters()`` (PyTorch's default initialiser; BatchNorm also resets
its running statistics), drawn from a generator seeded with ``seed + depth``
(the global random state is left untouched). A module that owns parameters but
has no ``reset_parameters`` gets i.i.d. normal draws with each tensor's own
standard deviation (1 where that is 0). :func:`cascading_randomization` is a
context manager: on exit every parameter and buffer is copied back in place,
bit for bit, whatever happened inside.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from eml_core.datasets import ErrorRecord
from eml_core.decomposition import SIDES, explain_pair
from eml_core.errors import ArgumentError, EmlError
from eml_core.faithfulness import (
    as_image_pairs,
    bootstrap_interval,
    check_arguments,
    load_pair_pixels,
    mean_statistic,
    stackable_groups,
)
from eml_core.methods import DEFAULT_METHODS, method_maps
from eml_core.models import EmbeddingModel, inference_mode_of
from eml_core.presentation import present


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _blocks(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """The children of ``module`` that hold parameters, in forward (registration) order; a single such child is
    opened up, so a backbone wrapped in one container still yields its blocks."""
    children = [(f"{prefix}.{name}", child) for name, child in module.named_children()
                if any(True for _ in child.parameters())]
    if _owns_parameters(module) or not children:
        return [(prefix, module)] if any(True for _ in module.parameters()) else []
    if len(children) == 1:
        return _blocks(children[0][1], children[0][0])
    return children


def randomization_layers(model: EmbeddingModel) -> list[str]:
    """Names (as in ``model.named_modules()``) of the layers the cascade re-initialises, in cascade order:
    the head's modules that own parameters from the output back, then the backbone's blocks from the top."""
    head = [f"head.{name}" if name else "head" for name, module in model.head.named_modules()
            if _owns_parameters(module)]
    backbone = [name for name, _ in _blocks(model.backbone, "backbone")]
    return list(reversed(head)) + list(reversed(backbone))


def randomize_layer(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter of ``module`` (and BatchNorm statistics) from a generator seeded with ``seed``,
    leaving the global random state as it was."""
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for sub in module.modules():
            if not _owns_parameters(sub):
                continue
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for parameter in sub.parameters(recurse=False):
                    spread = float(parameter.std()) if parameter.numel() > 1 else 0.0
                    parameter.normal_(0.0, spread if spread > 0 and math.isfinite(spread) else 1.0)


@dataclass(frozen=True)
class Stage:
    """One depth of the cascade: the first ``depth`` layers are randomized, ``layer`` the last of them."""

    depth: int
    layer: str
    randomized: tuple[str, ...]


class CascadingRandomization:
    """Context manager over a model: iterating it randomizes one more layer per step (cumulatively);
    leaving the ``with`` block restores every parameter and buffer exactly, in place."""

    def __init__(self, model: EmbeddingModel, layers: list[str] | None = None, seed: int = 0):
        self.model = model
        self.layers = list(layers) if layers is not None else randomization_layers(model)
        modules = dict(model.named_modules())
        unknown = [name for name in self.layers if name not in modules]
        if unknown:
            raise ArgumentError("layers", f"{unknown} are not modules of the model (see randomization_layers)")
        self.modules = [modules[name] for name in self.layers]
        self.seed = seed
        self._saved: list[dict[str, torch.Tensor]] | None = None

    def __enter__(self) -> CascadingRandomization:
        self._saved = [{k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items()} for m in self.modules]
        return self

    def __iter__(self) -> Iterator[Stage]:
        if self._saved is None:
            raise RuntimeError("iterate a CascadingRandomization inside its `with` block (it restores the model)")
        for depth, (name, module) in enumerate(zip(self.layers, self.modules, strict=True), start=1):
            randomize_layer(module, self.seed + depth)
            yield Stage(depth, name, tuple(self.layers[:depth]))

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for module, saved in zip(self.modules, self._saved or [], strict=False):  # nothing saved: nothing to do
                for key, tensor in module.state_dict(keep_vars=True).items():
                    tensor.copy_(saved[key])
        self._saved = None


def cascading_randomization(model: EmbeddingModel, layers: list[str] | None = None,
                            seed: int = 0) -> CascadingRandomization:
    """``with cascading_randomization(model) as cascade: for stage in cascade: ...`` (see the module docstring)."""
    return CascadingRandomization(model, layers, seed)


# ---------------------------------------------------------------------------------------------
# map comparisons


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps (flattened); NaN when either is constant."""
    from scipy.stats import ConstantInputWarning, spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        value = spearmanr(np.ravel(a), np.ravel(b)).statistic
    return float(value)


def ssim(a, b) -> float:
    """SSIM of two maps in [0, 1] (data range 1; a 7x7 window, smaller for maps under 7 pixels a side)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    window = min(7, *a.shape)
    window -= 1 - window % 2  # odd
    if window < 3:
        return float("nan")
    return float(structural_similarity(a, b, data_range=1.0, win_size=window))


def _maps_of(model, groups, methods, similarity) -> dict:
    """Raw maps (CPU) keyed by (pair index, side, method)."""
    out = {}
    for group in groups:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a randomized model may give zero embeddings: maps 0, compared as such
            explanation = explain_pair(model, model.preprocessing(torch.stack([i.pixels["query"] for i in group])),
                                       model.preprocessing(torch.stack([i.pixels["retrieved"] for i in group])),
                                       similarity)
        maps = method_maps(explanation, methods)
        for b, item in enumerate(group):
            for side in SIDES:
                for method in methods:
                    out[(item.index, side, method)] = maps[method][side][b].detach().float().cpu()
    return out


def evaluate_sanity(model: EmbeddingModel, pairs, methods=DEFAULT_METHODS, sides=SIDES, *, layers=None,
                    similarity: str = "cosine", seed: int = 0, explain_batch_size: int = 16, stage: str = "sanity"):
    """Cascading randomization on a shard of pairs; returns ``(rows, errors)`` (``sanity`` schema).

    One row per (pair, side, method, depth). ``layers`` defaults to
    :func:`randomization_layers`; the model is restored exactly afterwards.
    """
    methods, sides = check_arguments(methods, sides, 1, similarity)
    pairs = as_image_pairs(pairs)
    errors: list[ErrorRecord] = []
    loaded = load_pair_pixels(model, pairs, stage, errors)
    groups = list(stackable_groups(loaded, explain_batch_size))
    rows: list[dict] = []
    with inference_mode_of(model):
        try:
            trained = _maps_of(model, groups, methods, similarity)
        except (EmlError, RuntimeError) as error:
            for item in loaded:
                errors.append(ErrorRecord(stage, item.pair.pair_id, None, None, f"explanation failed: {error}"))
            return rows, errors
        sizes = {(item.index, side): (int(item.pixels[side].shape[-2]), int(item.pixels[side].shape[-1]))
                 for item in loaded for side in SIDES}
        shown = {key: present(raw, sizes[key[:2]])[0].numpy() for key, raw in trained.items()}
        with cascading_randomization(model, layers, seed) as cascade:
            for step in cascade:
                try:
                    randomized = _maps_of(model, groups, methods, similarity)
                except (EmlError, RuntimeError) as error:
                    errors.append(ErrorRecord(stage, None, None, None,
                                              f"depth {step.depth} ({step.layer}): explanation failed: {error}"))
                    continue
                for item in loaded:
                    for side in sides:
                        for method in methods:
                            key = (item.index, side, method)
                            raw = randomized[key]
                            rows.append({"pair_id": item.pair.pair_id, "side": side, "method": method,
                                         "depth": step.depth, "layer": step.layer,
                                         "spearman": spearman(trained[key].numpy(), raw.numpy()),
                                         "ssim": ssim(shown[key], present(raw, sizes[key[:2]])[0].numpy())})
    return rows, errors


def summarise_sanity(sanity_rows, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> list[dict]:
    """``sanity_summary`` rows: per (method, depth), mean Spearman and SSIM over pairs (a pair's value is the mean
    over its sides; undefined correlations of constant maps are left out) with percentile-bootstrap intervals."""
    import pandas as pd

    data = pd.DataFrame(sanity_rows)
    rows: list[dict] = []
    if data.empty:
        return rows
    per_pair = data.groupby(["method", "depth", "layer", "pair_id"], sort=False)[["spearman", "ssim"]].mean()
    for (method, depth, layer), group in per_pair.reset_index().groupby(["method", "depth", "layer"], sort=False):
        row = {"method": method, "depth": int(depth), "layer": layer, "pairs": len(group), "confidence": confidence}
        for measure in ("spearman", "ssim"):
            values = group[measure].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            row[measure] = float(values.mean()) if len(values) else float("nan")
            row[f"{measure}_low"], row[f"{measure}_high"] = bootstrap_interval((values,), mean_statistic, confidence,
                                                                              resamples, seed)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["method"], r["depth"]))


def sanity_verdicts(summary_rows, threshold: float = 0.5) -> list[dict]:
    """Per method, at the deepest depth (the whole cascade randomized): mean Spearman and SSIM to the trained
    model's maps, and ``passes`` = both below ``threshold`` (the maps changed when the model did).

    Also the first depth at which both fall below the threshold (``changed_at``; None if never)."""
    verdicts = []
    methods = sorted({r["method"] for r in summary_rows})
    for method in methods:
        rows = sorted((r for r in summary_rows if r["method"] == method), key=lambda r: r["depth"])
        final = rows[-1]
        changed = [r for r in rows if r["spearman"] < threshold and r["ssim"] < threshold]
        verdicts.append({"method": method, "depth": final["depth"], "layer": final["layer"],
                         "spearman": final["spearman"], "ssim": final["ssim"],
                         "passes": bool(final["spearman"] < threshold and final["ssim"] < threshold),
                         "changed_at": changed[0]["layer"] if changed else None})
    return verdicts

