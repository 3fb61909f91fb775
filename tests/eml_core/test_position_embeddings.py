"""Position embeddings F, B: golden values on hand-set heads, closed form == Taylor path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eml_core import HEAD_KINDS, UnsupportedHeadError, build_head
from eml_core.position_embeddings import position_embeddings
from tests.conftest import randomise_batchnorm

# Feature map with C=2 channels on a 1x2 grid: channel 0 = (1, 3), channel 1 = (2, 0).
A = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])
W = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
b = torch.tensor([0.5, -1.0])


def _linear(layer: nn.Linear, weight, bias) -> None:
    layer.weight.data.copy_(torch.as_tensor(weight))
    layer.bias.data.copy_(torch.as_tensor(bias))


def test_gap_golden():
    pe = position_embeddings(build_head("gap", 2).eval(), A, "closed_form")
    assert torch.allclose(pe.features[0], torch.tensor([[0.5, 1.0], [1.5, 0.0]]))
    assert torch.allclose(pe.bias, torch.zeros(1, 2))
    assert torch.allclose(pe.embedding, torch.tensor([[2.0, 1.0]]))


def test_gmp_golden_uses_the_forward_argmax():
    pe = position_embeddings(build_head("gmp", 2).eval(), A, "closed_form")
    # channel 0 peaks at position 1, channel 1 at position 0 (paper Eq. 7's max mask)
    assert torch.allclose(pe.features[0], torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
    assert torch.allclose(pe.embedding, torch.tensor([[3.0, 2.0]]))


def test_gmp_tie_keeps_exactly_one_position_per_channel():
    tied = torch.tensor([[[[2.0, 2.0]], [[1.0, 1.0]]]])
    pe = position_embeddings(build_head("gmp", 2).eval(), tied, "closed_form")
    assert torch.allclose(pe.features.sum(1), pe.embedding)
    assert torch.allclose(pe.features[0], torch.tensor([[2.0, 1.0], [0.0, 0.0]]))


def test_gap_fc_golden():
    head = build_head("gap_fc", 2, 2).eval()
    _linear(head[2], W, b)
    pe = position_embeddings(head, A, "closed_form")
    assert torch.allclose(pe.features[0], torch.tensor([[-0.5, 1.5], [1.5, 3.0]]))
    assert torch.allclose(pe.bias[0], b)
    assert torch.allclose(pe.embedding[0], torch.tensor([1.5, 3.5]))


def test_gmp_fc_golden():
    head = build_head("gmp_fc", 2, 2).eval()
    _linear(head[2], W, b)
    pe = position_embeddings(head, A, "closed_form")
    # F_0 = W (0, 2) = (-2, 1); F_1 = W (3, 0) = (3, 6)
    assert torch.allclose(pe.features[0], torch.tensor([[-2.0, 1.0], [3.0, 6.0]]))
    assert torch.allclose(pe.embedding[0], torch.tensor([1.5, 6.0]))


def test_gap_bn_golden():
    head = build_head("gap_bn", 2).eval()
    bn = head[2]
    bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
    bn.running_var.copy_(torch.tensor([4.0 - bn.eps, 1.0 - bn.eps]))  # std 2 and 1
    bn.weight.data.copy_(torch.tensor([2.0, 3.0]))
    bn.bias.data.copy_(torch.tensor([0.0, 1.0]))
    pe = position_embeddings(head, A, "closed_form")
    # scale s = (1, 3); shift t = (0 - 1*1, 1 + 1*3) = (-1, 4)
    assert torch.allclose(pe.features[0], torch.tensor([[0.5, 3.0], [1.5, 0.0]]), atol=1e-6)
    assert torch.allclose(pe.bias[0], torch.tensor([-1.0, 4.0]), atol=1e-6)
    assert torch.allclose(pe.embedding[0], torch.tensor([1.0, 7.0]), atol=1e-6)


def test_flatten_fc_bn_golden():
    head = build_head("flatten_fc_bn", 2, 1, feature_size=(1, 2)).eval()
    bn2d, _, _, fc, bn1d = head
    bn2d.running_mean.zero_(), bn2d.running_var.fill_(1 - bn2d.eps)
    bn2d.weight.data.copy_(torch.tensor([1.0, 2.0])), bn2d.bias.data.copy_(torch.tensor([0.0, 1.0]))
    # flat order is (c0p0, c0p1, c1p0, c1p1)
    _linear(fc, [[1.0, 2.0, 3.0, 4.0]], [0.5])
    bn1d.running_mean.zero_(), bn1d.running_var.fill_(1 - bn1d.eps)
    bn1d.weight.data.fill_(2.0), bn1d.bias.data.fill_(-1.0)
    pe = position_embeddings(head, A, "closed_form")
    # after BN2d: contributions c0 = (1, 3), c1 = (4, 0); bias c0 = (0, 0), c1 = (1, 1)
    # F_0 = 2 * (1*1 + 3*4) = 26, F_1 = 2 * (2*3 + 4*0) = 12; B = 2 * (3 + 4 + 0.5) - 1 = 14
    assert torch.allclose(pe.features[0], torch.tensor([[26.0], [12.0]]), atol=1e-5)
    assert torch.allclose(pe.bias[0], torch.tensor([14.0]), atol=1e-5)
    assert torch.allclose(pe.embedding[0], torch.tensor([52.0]), atol=1e-5)


def test_gap_fc_relu_fc_golden_uses_the_forward_relu_mask():
    head = build_head("gap_fc_relu_fc", 2, 1, hidden_dim=2).eval()
    _linear(head[2], W, [-2.0, 0.0])   # hidden pre-activation = W (2, 1) + (-2, 0) = (-1, 4.5): unit 0 is off
    _linear(head[4], [[1.0, 2.0]], [0.25])
    pe = position_embeddings(head, A, "closed_form")
    # only unit 1 passes: F_p = 2 * (W A_p / 2)[1] -> F_0 = 2 * 1.5 = 3, F_1 = 2 * 3 = 6; B = 0.25
    assert torch.allclose(pe.features[0], torch.tensor([[3.0], [6.0]]))
    assert torch.allclose(pe.bias[0], torch.tensor([0.25]))
    assert torch.allclose(pe.embedding[0], torch.tensor([9.25]))


def _random_head(kind: str, seed: int, channels: int = 6, feature_size=(3, 5)) -> nn.Module:
    torch.manual_seed(seed)
    dim = None if kind in ("gap", "gmp", "gap_bn") else 4
    head = build_head(kind, channels, dim, feature_size=feature_size, hidden_dim=9)
    randomise_batchnorm(head, torch.Generator().manual_seed(seed))
    return head.eval()


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_closed_form_equals_taylor_path(kind):
    head = _random_head(kind, seed=3)
    feature_map = torch.randn(3, 6, 3, 5, generator=torch.Generator().manual_seed(4))
    closed = position_embeddings(head, feature_map, "closed_form")
    taylor = position_embeddings(head, feature_map, "autograd")
    assert closed.method == "closed_form" and taylor.method == "autograd"
    assert torch.allclose(closed.features, taylor.features, atol=1e-5, rtol=1e-4)
    assert torch.allclose(closed.bias, taylor.bias, atol=1e-4, rtol=1e-4)
    assert torch.allclose(closed.embedding, head(feature_map), atol=1e-6)
    assert torch.allclose(closed.features.sum(1) + closed.bias, closed.embedding, atol=1e-5)
    # every listed head is affine around A: the Taylor path says so
    assert taylor.linearisation_residual.max() < 1e-5  # float noise is ~1e-7


def test_one_by_one_conv_and_leaky_and_prelu_have_closed_forms():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(6, 4, 1), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3), nn.PReLU(3), nn.Identity(), nn.Dropout(0.5)).eval()
    feature_map = torch.randn(2, 6, 4, 4)
    closed = position_embeddings(head, feature_map, "closed_form")
    taylor = position_embeddings(head, feature_map, "autograd")
    assert torch.allclose(closed.features, taylor.features, atol=1e-5)
    assert torch.allclose(closed.bias, taylor.bias, atol=1e-5)


class L2Normalise(nn.Module):
    def forward(self, x):
        return x / x.norm(dim=1, keepdim=True)


def test_curved_head_goes_to_taylor_path_and_reports_its_residual():
    torch.manual_seed(0)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4), nn.Tanh(), L2Normalise()).eval()
    feature_map = torch.randn(2, 6, 3, 3) * 3
    with pytest.raises(UnsupportedHeadError, match="Tanh"):
        position_embeddings(head, feature_map, "closed_form")
    pe = position_embeddings(head, feature_map, "auto")
    assert pe.method == "autograd"
    assert torch.allclose(pe.features.sum(1) + pe.bias, pe.embedding, atol=1e-6)
    assert (pe.linearisation_residual > 1e-4).all()  # curved: 100x above the affine heads' noise floor


def test_taylor_path_matches_a_brute_force_jacobian():
    torch.manual_seed(1)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3), nn.Softplus()).eval()
    feature_map = torch.randn(1, 6, 2, 2)
    pe = position_embeddings(head, feature_map, "autograd")
    jacobian = torch.autograd.functional.jacobian(lambda a: head(a)[0], feature_map)[:, 0]  # (l, C, h, w)
    expected = torch.einsum("lchw,chw->hwl", jacobian, feature_map[0]).reshape(4, 3)
    assert torch.allclose(pe.features[0], expected, atol=1e-6)


def test_batchnorm_in_training_mode_is_refused_by_closed_form():
    head = build_head("gap_bn", 3).train()
    with pytest.raises(UnsupportedHeadError, match="training mode"):
        position_embeddings(head, torch.randn(2, 3, 2, 2), "closed_form")


def test_activation_between_pooling_and_flatten_has_a_closed_form():
    torch.manual_seed(2)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.PReLU(6, init=0.1), nn.Flatten(), nn.Linear(6, 3)).eval()
    feature_map = torch.randn(4, 6, 3, 3)
    closed = position_embeddings(head, feature_map, "closed_form")
    taylor = position_embeddings(head, feature_map, "autograd")
    assert closed.features.shape == (4, 9, 3)
    assert torch.allclose(closed.features, taylor.features, atol=1e-6)
    assert torch.allclose(closed.features.sum(1) + closed.bias, head(feature_map), atol=1e-6)
