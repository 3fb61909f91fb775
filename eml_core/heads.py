"""Embedding heads: the layers between the last feature map A and the embedding E.

Every head built here is an ``nn.Sequential`` of layers the closed-form
decomposition understands (see :mod:`eml_core.position_embeddings`), so at a given
input each is exactly affine in A:  E = sum_p W_p A_p + B.

===================  ===========================================================
kind                 layers (C = backbone channels, d = embedding_dim)
===================  ===========================================================
``gap``              global average pooling                       (d = C)
``gmp``              global max pooling                           (d = C)
``gap_fc``           GAP -> Linear(C, d)
``gmp_fc``           GMP -> Linear(C, d)
``gap_bn``           GAP -> BatchNorm1d(C), the re-id "BNNeck"    (d = C)
``flatten_fc_bn``    BatchNorm2d(C) -> Dropout -> Flatten -> Linear(C*h*w, d)
                     -> BatchNorm1d(d), the face-recognition output layer;
                     needs the feature map size (h, w)
``gap_fc_relu_fc``   GAP -> Linear(C, hidden) -> ReLU -> Linear(hidden, d),
                     non-linear, affine given the forward pass's ReLU mask
===================  ===========================================================
"""

from __future__ import annotations

from torch import nn

from eml_core.errors import ArgumentError

HEAD_KINDS = ("gap", "gmp", "gap_fc", "gmp_fc", "gap_bn", "flatten_fc_bn", "gap_fc_relu_fc")

# Heads whose embedding has the backbone's channel count, whatever embedding_dim says.
_CHANNEL_WIDTH_HEADS = ("gap", "gmp", "gap_bn")


def head_needs_feature_size(kind: str) -> bool:
    """Whether the head's parameters depend on the feature map's (h, w)."""
    return kind == "flatten_fc_bn"


def build_head(
    kind: str,
    channels: int,
    embedding_dim: int | None = None,
    feature_size: tuple[int, int] | None = None,
    hidden_dim: int | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Build a head of the given ``kind`` for a ``channels``-channel feature map.

    ``embedding_dim`` is required for heads with a Linear projection and, if given,
    must equal ``channels`` for ``gap``, ``gmp`` and ``gap_bn``.
    """
    if kind not in HEAD_KINDS:
        raise ArgumentError("head", f"unknown head {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    if kind in _CHANNEL_WIDTH_HEADS:
        if embedding_dim not in (None, channels):
            raise ArgumentError(
                "embedding_dim",
                f"head {kind!r} keeps the backbone's {channels} channels; got embedding_dim={embedding_dim}",
            )
    elif embedding_dim is None or embedding_dim < 1:
        raise ArgumentError("embedding_dim", f"head {kind!r} needs a positive embedding_dim, got {embedding_dim}")

    gap = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    gmp = [nn.AdaptiveMaxPool2d(1), nn.Flatten(1)]
    dim = embedding_dim or channels  # checked above for the heads with a Linear layer
    if kind == "gap":
        layers = gap
    elif kind == "gmp":
        layers = gmp
    elif kind == "gap_fc":
        layers = [*gap, nn.Linear(channels, dim)]
    elif kind == "gmp_fc":
        layers = [*gmp, nn.Linear(channels, dim)]
    elif kind == "gap_bn":
        neck = nn.BatchNorm1d(channels)
        neck.bias.requires_grad_(False)  # BNNeck (Luo et al. 2019): no shift, as in re-id
        layers = [*gap, neck]
    elif kind == "flatten_fc_bn":
        if feature_size is None:
            raise ArgumentError("input_size", "head 'flatten_fc_bn' needs a fixed input size "
                                              "(its Linear layer sees every position)")
        h, w = feature_size
        layers = [
            nn.BatchNorm2d(channels),
            nn.Dropout(dropout),
            nn.Flatten(1),
            nn.Linear(channels * h * w, dim),
            nn.BatchNorm1d(dim),
        ]
    else:  # gap_fc_relu_fc
        hidden = hidden_dim or max(dim, 512)
        layers = [*gap, nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, dim)]
    return nn.Sequential(*layers)
