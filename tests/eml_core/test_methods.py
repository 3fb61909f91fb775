"""The registry of map methods: what is registered, what each returns, and the one dispatch everybody uses."""

from __future__ import annotations

import pytest
import torch

from eml_core import explain_pair
from eml_core.errors import ArgumentError
from eml_core.methods import DEFAULT_METHODS, REGISTRY, get_method, method_maps, register
from tests.conftest import tiny_model


def test_registered_methods_name_the_paper_and_state_their_equation():
    assert DEFAULT_METHODS == ("gradcam", "gradcam_nonorm", "decomposition", "decomposition_bias",
                               "decomposition_pairwise")
    assert {m.paper_name for m in REGISTRY.values()} >= {"Grad-CAM", "Grad-CAM (no norm)", "Decomposition",
                                                         "Decomposition+Bias"}
    for method in REGISTRY.values():
        assert method.description and "\n" not in method.description
    assert [m.name for m in REGISTRY.values() if m.point_specific] == ["decomposition", "decomposition_bias",
                                                                      "decomposition_pairwise"]
    # the paper's "Decomposition" (Table I) is the authors' pairwise ReLU; each docstring says where the ReLU goes
    assert get_method("decomposition_pairwise").paper_name == "Decomposition"
    assert "BEFORE the sum" in get_method("decomposition_pairwise").description
    assert "after the sum" in get_method("decomposition").description


def test_every_method_maps_both_sides_at_feature_resolution():
    model = tiny_model("gap_fc")
    generator = torch.Generator().manual_seed(0)
    explanation = explain_pair(model, torch.randn(2, 3, 24, 32, generator=generator),
                               torch.randn(2, 3, 20, 28, generator=generator))
    maps = method_maps(explanation, tuple(REGISTRY))
    for name, sides in maps.items():
        assert sides["query"].shape == (2, 6, 8), name
        assert sides["retrieved"].shape == (2, 5, 7), name
    assert torch.allclose(maps["decomposition_bias"]["query"], explanation.overall("query", bias=True))


def test_gap_head_makes_gradcam_nonorm_proportional_to_decomposition_bias():
    """Paper Appendix A, through the registry: for a GAP head the two maps differ by the positive factor
    Z = |E_q||E_r| only, so once divided by their max (as localization does) the columns coincide."""
    model = tiny_model("gap_fc")
    explanation = explain_pair(model, torch.randn(1, 3, 24, 32), torch.randn(1, 3, 24, 32))
    maps = method_maps(explanation, ("gradcam_nonorm", "decomposition_bias"))
    for side in ("query", "retrieved"):
        scaled = maps["decomposition_bias"][side] * explanation.normaliser.view(-1, 1, 1)
        assert torch.allclose(maps["gradcam_nonorm"][side], scaled, rtol=1e-4, atol=1e-7)


def test_unknown_method_names_the_choices_and_names_cannot_be_registered_twice():
    with pytest.raises(ArgumentError, match="unknown method 'foo'; choose from gradcam, gradcam_nonorm"):
        get_method("foo")
    with pytest.raises(ValueError, match="registered twice"):
        register("decomposition", "Decomposition")(lambda explanation: {})
