"""Cascading model randomization: which layers, in what order, exact restoration, and the map comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eml_core.errors import ArgumentError
from eml_core.faithfulness import ImagePair
from eml_core.faithfulness_figures import sanity_figure
from eml_core.methods import REGISTRY, register
from eml_core.models import build_model
from eml_core.sanity import (
    cascading_randomization,
    evaluate_sanity,
    randomization_layers,
    randomize_layer,
    sanity_verdicts,
    spearman,
    ssim,
    summarise_sanity,
)
from eml_core.tables import frame
from tests.conftest import tiny_model
from tests.hostile.images import random_rgb


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_layers_are_named_head_first_then_backbone_blocks_from_the_top():
    assert randomization_layers(tiny_model("gap_fc")) == ["head.2", "backbone.2", "backbone.0"]
    assert randomization_layers(tiny_model("flatten_fc_bn")) == ["head.4", "head.3", "head.0", "backbone.2",
                                                                  "backbone.0"]
    assert randomization_layers(tiny_model("gap_fc_relu_fc")) == ["head.4", "head.2", "backbone.2", "backbone.0"]
    mobilenet = build_model("mobilenet_v2", "gap_fc", pretrained=False)
    assert randomization_layers(mobilenet) == ["head.2"] + [f"backbone.{i}" for i in range(18, -1, -1)]


def test_each_stage_changes_exactly_the_layers_it_names_and_the_model_is_restored_in_place():
    model = tiny_model("flatten_fc_bn")
    before = snapshot(model)
    objects = {name: tensor for name, tensor in model.state_dict(keep_vars=True).items()}
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        output = model(x)
    seen = []
    with cascading_randomization(model, seed=4) as cascade:
        for stage in cascade:
            seen.append(stage.layer)
            now = model.state_dict()
            for name, tensor in now.items():
                randomized = any(name.startswith(layer + ".") for layer in stage.randomized)
                if name.endswith("num_batches_tracked"):
                    continue
                assert torch.equal(tensor, before[name]) != randomized, (stage.layer, name)
    assert seen == randomization_layers(model)
    after = model.state_dict(keep_vars=True)
    for name, tensor in after.items():
        assert torch.equal(tensor, before[name]), name
        assert tensor is objects[name], f"{name} was replaced, not restored in place"
    with torch.no_grad():
        assert torch.equal(model(x), output)


def test_the_model_is_restored_when_the_block_raises_and_the_global_random_state_is_untouched():
    model = tiny_model("gap_fc")
    before = snapshot(model)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with pytest.raises(RuntimeError, match="boom"), cascading_randomization(model) as cascade:
        for stage in cascade:
            if stage.depth == 2:
                raise RuntimeError("boom")
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


def test_randomization_is_reproducible_from_its_seed_and_unknown_layers_are_named():
    a, b = tiny_model("gap_fc"), tiny_model("gap_fc")
    randomize_layer(a.head, 7)
    randomize_layer(b.head, 7)
    assert torch.equal(a.head[2].weight, b.head[2].weight)
    randomize_layer(b.head, 8)
    assert not torch.equal(a.head[2].weight, b.head[2].weight)
    with pytest.raises(ArgumentError, match=r"layers: \['head.9'\] are not modules of the model"):
        cascading_randomization(a, ["head.9"])


def test_map_comparisons_golden_values():
    ramp = np.arange(49, dtype=float).reshape(7, 7)
    assert spearman(ramp, ramp ** 3) == pytest.approx(1.0)
    assert spearman(ramp, -ramp) == pytest.approx(-1.0)
    assert math.isnan(spearman(ramp, np.zeros((7, 7))))
    shown = ramp / ramp.max()
    assert ssim(shown, shown) == pytest.approx(1.0)
    assert ssim(shown, shown[::-1]) < 0.5


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sanity")
    paths = [str(random_rgb(folder / f"{n}.png", (24, 32), seed=n)) for n in range(3)]
    return [ImagePair(f"p{n}", paths[n], paths[(n + 1) % 3]) for n in range(3)]


@pytest.fixture
def centre_prior():
    """A 'method' that ignores the model: a fixed bump in the middle of every map (it must fail the check)."""

    @register("centre_prior", "Centre prior")
    def compute(explanation):
        maps = {}
        for side in ("query", "retrieved"):
            h, w = explanation.feature_size(side)
            y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            bump = -((y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2).float()
            maps[side] = (bump - bump.min() + 1).expand(explanation.batch_size, h, w)
        return maps

    yield "centre_prior"
    del REGISTRY["centre_prior"]


def test_evaluate_sanity_flags_a_method_that_ignores_the_model_and_restores_the_model(pairs, centre_prior):
    model = tiny_model("gap_fc")
    before = snapshot(model)
    methods = ("decomposition", "gradcam", centre_prior)
    rows, errors = evaluate_sanity(model, pairs + [ImagePair("bad", "/absent.png", pairs[0].query)], methods)
    assert [e.item for e in errors] == ["bad"]
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    depths = len(randomization_layers(model))
    assert len(rows) == 3 * 2 * len(methods) * depths
    frame("sanity", rows)
    summary = summarise_sanity(rows, resamples=200)
    frame("sanity_summary", summary)
    assert [r["layer"] for r in summary if r["method"] == "gradcam"] == randomization_layers(model)
    prior = [r for r in summary if r["method"] == centre_prior]
    assert all(r["spearman"] == pytest.approx(1.0) and r["ssim"] == pytest.approx(1.0) for r in prior)
    verdicts = {v["method"]: v for v in sanity_verdicts(summary)}
    assert verdicts[centre_prior]["passes"] is False and verdicts[centre_prior]["changed_at"] is None
    for method in ("decomposition", "gradcam"):   # the whole tiny model randomized: its maps change
        assert verdicts[method]["passes"] is True, verdicts[method]
    png = sanity_figure(summary)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
