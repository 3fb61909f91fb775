"""Presentation: rectify -> upsample -> normalise, flags instead of division by zero, top-fraction masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eml_core import ArgumentError, normalise, overlay, present, top_fraction_mask, upsample


def test_present_follows_the_paper_order():
    raw = torch.tensor([[[-1.0, 2.0], [4.0, 0.0]]])
    shown, flagged = present(raw, (4, 4))
    assert not flagged.any()
    assert shown.max().item() == pytest.approx(1.0) and shown.min().item() >= 0
    # the negative corner is rectified before upsampling, so it reads 0, not negative
    assert shown[0, 0, 0].item() == pytest.approx(0.0)
    assert shown[0, 3, 0].item() == pytest.approx(1.0)


def test_upsample_uses_half_pixel_centres():
    out = upsample(torch.tensor([[0.0, 1.0]]), (1, 4))
    assert torch.allclose(out, torch.tensor([[0.0, 0.25, 0.75, 1.0]]))


def test_all_zero_and_non_finite_maps_are_flagged_not_divided_by_zero():
    maps = torch.stack([torch.zeros(2, 2), torch.tensor([[1.0, float("nan")], [0.0, 2.0]]), torch.ones(2, 2)])
    out, flagged = normalise(maps)
    assert flagged.tolist() == [True, True, False]
    assert torch.isfinite(out).all() and (out[:2] == 0).all()
    out, flagged = normalise(maps, mode="minmax")
    assert flagged.tolist() == [True, True, True]  # a constant map has no range either


def test_minmax_normalisation():
    out, flagged = normalise(torch.tensor([[2.0, 4.0], [3.0, 6.0]]), mode="minmax")
    assert torch.allclose(out, torch.tensor([[0.0, 0.5], [0.25, 1.0]]))


def test_top_fraction_mask_selects_exactly_the_top_pixels():
    maps = torch.arange(100.0).view(1, 10, 10)
    mask = top_fraction_mask(maps, 0.02)
    assert mask.sum().item() == 2 and mask[0, 9, 8] and mask[0, 9, 9]
    ties = torch.ones(1, 10, 10)
    assert top_fraction_mask(ties, 0.05).sum().item() == 5
    with pytest.raises(ArgumentError, match="fraction"):
        top_fraction_mask(maps, 0.0)


def test_overlay_shape_and_size_check():
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    out = overlay(image, np.ones((4, 6)))
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert out[..., 0].max() > 0  # the hot end of JET is red
    with pytest.raises(ArgumentError, match="does not match"):
        overlay(image, np.ones((5, 6)))


def _normalise_every_step(maps: torch.Tensor, mode: str):
    """The normalisation written out with every step applied (zeroing, subtracting 0, the final where)."""
    flat = maps.reshape(*maps.shape[:-2], -1)
    finite = torch.isfinite(flat).all(-1)
    clean = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat))
    top = clean.max(-1, keepdim=True).values
    bottom = clean.min(-1, keepdim=True).values if mode == "minmax" else torch.zeros_like(top)
    span = top - bottom
    flagged = ~finite | (span.squeeze(-1) <= 0)
    scaled = (clean - bottom) / torch.where(span > 0, span, torch.ones_like(span))
    scaled = torch.where(flagged.unsqueeze(-1), torch.zeros_like(scaled), scaled)
    return scaled.reshape(maps.shape), flagged


@pytest.mark.parametrize("mode", ["max", "minmax"])
def test_the_short_ways_give_the_same_bits_as_every_step(mode):
    """normalise skips steps that change nothing when every value is finite; the bits must not change."""
    generator = torch.Generator().manual_seed(7)
    specials = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-38, -1e-30])
    for trial in range(60):
        maps = torch.randn(3, 1 + trial % 5, 2 + trial % 7, generator=generator) * 10 ** (trial % 5 - 2)
        if trial % 3 == 0:
            maps = maps.clamp_min(0)
        if trial % 4 == 1:   # some special values somewhere (some maps non-finite, some not)
            where = torch.randint(0, maps.numel(), (2,), generator=generator)
            maps.view(-1)[where] = specials[torch.randint(0, len(specials), (2,), generator=generator)]
        got, got_flagged = normalise(maps.clone(), mode)
        want, want_flagged = _normalise_every_step(maps.clone(), mode)
        assert torch.equal(got_flagged, want_flagged)
        assert got.numpy().tobytes() == want.numpy().tobytes(), trial
