"""Measure a real model: FLOPs with PyTorch's ``FlopCounterMode``, parameters by counting.

This is the yardstick every analytic cost of :mod:`adc.analysis.cost` is
checked against (at analysis, on trial-pruned copies, and on every pruned
model adc hands back). FLOPs are 2 x MACs, ``FlopCounterMode``'s convention;
bias additions, normalisations and activations are not counted, as there.

Two gaps of ``FlopCounterMode`` would undercount attention models silently,
so both are closed here:

* In eval mode without gradients, ``nn.MultiheadAttention`` and
  ``nn.TransformerEncoderLayer`` take a "fast path", one fused kernel
  (``aten._native_multi_head_attention``) that ``FlopCounterMode`` has no
  formula for: ViT-B/16 counted 22.5 GFLOPs instead of 35.1. Counting runs
  with the fast path off (:func:`mha_fastpath_disabled`), the same
  arithmetic through ops it counts.
* On the CPU, ``scaled_dot_product_attention`` runs
  ``aten._scaled_dot_product_flash_attention_for_cpu``, which has no formula
  either (the attention products of ViT-B/16, 1.4 GFLOPs, went missing); it
  is counted here with PyTorch's own SDPA formula.

Any other operator that does matrix or attention arithmetic without a
formula makes :func:`count` refuse (:class:`UncountedOperator`) rather than
report a number that is too small.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

from adc.utils.errors import AdcError


class Costs(NamedTuple):
    """Per-sample cost of a network."""

    macs: int
    flops: int
    params: int


class UncountedOperator(AdcError):
    """The model runs an operator that does arithmetic ``FlopCounterMode`` cannot count."""


def _sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _mv_flops(a_shape: Any, x_shape: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * a_shape[0] * a_shape[1]


def _addmv_flops(self_shape: Any, a_shape: Any, x_shape: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * a_shape[0] * a_shape[1]


def _dot_flops(a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * a_shape[0]


def _extra_formulas() -> dict[Any, Any]:
    """Formulas for the kernels ``FlopCounterMode`` lacks (those this PyTorch has): 2 x MACs, as its own."""
    aten = torch.ops.aten
    formulas = {"_scaled_dot_product_flash_attention_for_cpu": _sdpa_flops,
                "_scaled_dot_product_fused_attention_overrideable": _sdpa_flops,
                "mv": _mv_flops, "addmv": _addmv_flops, "dot": _dot_flops, "vdot": _dot_flops}
    return {getattr(aten, n): f for n, f in formulas.items() if hasattr(aten, n)}


# Operator names that mean matrix or attention arithmetic: one of these without a formula is refused.
_ARITHMETIC = re.compile(r"attention|multi_head|transformer|convolution|conv\d|matmul|einsum|mm$|^(addmv|mv|dot|vdot)$")


class _OperatorLog(TorchDispatchMode):
    """Records every operator a forward pass runs (to find those nobody counted).

    Entered outside ``FlopCounterMode``, it sees what the counter ran, after the counter decomposed
    the operators it has no formula for into ones it has.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[Any] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.seen.add(func._overloadpacket)
        return func(*args, **(kwargs or {}))


@contextmanager
def mha_fastpath_disabled() -> Iterator[None]:
    """Run ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` through their unfused path, then restore.

    The fused eval kernel has no FLOP formula and no ONNX or TorchScript form; the unfused path
    computes the same outputs with ops both understand.
    """
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def count(model: nn.Module, example_input: torch.Tensor) -> Costs:
    """Measure a real model: FLOPs with ``FlopCounterMode``, parameters by counting.

    Args:
        model: Any network (pruned or not); on the ``meta`` device too (nothing is computed then).
        example_input: An input batch; costs are divided by its batch size.

    Returns:
        Per-sample MACs, FLOPs and parameters.

    Raises:
        UncountedOperator: when the forward pass runs matrix or attention arithmetic that no
            formula counts (the FLOPs would be too low).
    """
    formulas = _extra_formulas()
    log = _OperatorLog()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mha_fastpath_disabled(), log, \
                flop_counter.FlopCounterMode(display=False, custom_mapping=formulas) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    uncounted = sorted(str(op) for op in log.seen if op not in flop_counter.flop_registry and op not in formulas
                       and _ARITHMETIC.search(str(op).rsplit(".", 1)[-1]))
    if uncounted:
        raise UncountedOperator(
            f"cannot count the FLOPs of {type(model).__name__}: it runs {', '.join(uncounted)}, which "
            "torch.utils.flop_counter has no formula for (adc would report too few FLOPs)")
    flops = counter.get_total_flops() // example_input.shape[0]
    params = sum(p.numel() for p in model.parameters())
    return Costs(flops // 2, flops, params)
