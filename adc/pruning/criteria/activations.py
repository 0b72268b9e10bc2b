"""Criteria from the activations on the calibration batches: how often a channel is zero, how much it varies."""

from __future__ import annotations

import torch

from adc.analysis.graph import Unit
from adc.pruning.criteria.base import register_criterion
from adc.pruning.criteria.context import ScoreContext

ENTROPY_BINS = 32
"""Histogram bins of the entropy criterion (Luo & Wu's ``m``), sized for a few hundred calibration images."""


@register_criterion("apoz", data=True)
def apoz(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Average percentage of zeros after the activation (Hu et al., 2016): channels
    that a ReLU mostly zeroes carry little; the score is the fraction of positive
    outputs of the unit's last normalisation (or layer) outputs."""
    positive = ctx.positive_fraction()
    total = torch.zeros(unit.channels, dtype=torch.float64)
    count = torch.zeros(unit.channels, dtype=torch.float64)
    for m in ctx.output_members(unit, positive):
        root = torch.as_tensor(m.root_idxs, dtype=torch.long)
        total.index_add_(0, root, positive[m.module][torch.as_tensor(m.idxs, dtype=torch.long)].double())
        count.index_add_(0, root, torch.ones(len(m.idxs), dtype=torch.float64))
    return total / count.clamp_min(1)


def channel_entropy(values: torch.Tensor, bins: int = ENTROPY_BINS) -> torch.Tensor:
    """Entropy (nats) of each column of ``values`` (``N x C``), histogrammed on bins shared by all columns.

    The bins span the range of the whole matrix (one layer's channels), so a
    channel that barely varies falls in few bins and scores low, whatever its
    own scale; a constant channel scores 0.
    """
    lo, hi = values.min(), values.max()
    span = (hi - lo).clamp_min(1e-12)
    index = ((values - lo) / span * bins).long().clamp(0, bins - 1)
    counts = torch.zeros(values.shape[1], bins, dtype=torch.float64)
    counts.scatter_add_(1, index.T, torch.ones_like(index.T, dtype=torch.float64))
    p = counts / counts.sum(1, keepdim=True).clamp_min(1)
    return -(p * torch.log(p.clamp_min(1e-300))).sum(1)


@register_criterion("entropy", data=True)
def entropy(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Entropy of the channel's activations (Luo & Wu, "An Entropy-based Pruning Method for
    CNN Compression", 2017): each image's feature map is globally average-pooled, the
    values over the calibration images are histogrammed, and a channel whose
    histogram has little entropy (it says about the same for every image) is pruned first.

    The activations are the unit's batch-norm (or layer) outputs; the bins span
    the whole layer's range (:func:`channel_entropy`).
    """
    pooled = ctx.pooled_outputs("entropy")
    total = torch.zeros(unit.channels, dtype=torch.float64)
    count = torch.zeros(unit.channels, dtype=torch.float64)
    for m in ctx.output_members(unit, pooled):
        values = channel_entropy(pooled[m.module])[torch.as_tensor(m.idxs, dtype=torch.long)]
        root = torch.as_tensor(m.root_idxs, dtype=torch.long)
        total.index_add_(0, root, values)
        count.index_add_(0, root, torch.ones(len(m.idxs), dtype=torch.float64))
    return total / count.clamp_min(1)
