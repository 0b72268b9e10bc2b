"""Measure a real model: FLOPs with PyTorch's ``FlopCounterMode``, parameters by counting.

This is the yardstick every analytic cost of :mod:`adc.analysis.cost` is
checked against (at analysis, on trial-pruned copies, and on every pruned
model adc hands back). FLOPs are 2 x MACs, ``FlopCounterMode``'s convention;
bias additions, normalisations and activations are not counted, as there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class Costs(NamedTuple):
    """Per-sample cost of a network."""

    macs: int
    flops: int
    params: int


def count(model: nn.Module, example_input: torch.Tensor) -> Costs:
    """Measure a real model: FLOPs with ``FlopCounterMode``, parameters by counting.

    Args:
        model: Any network (pruned or not).
        example_input: An input batch; costs are divided by its batch size.

    Returns:
        Per-sample MACs, FLOPs and parameters.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    flops = counter.get_total_flops() // example_input.shape[0]
    params = sum(p.numel() for p in model.parameters())
    return Costs(flops // 2, flops, params)
