"""Exact cost of a pruning policy, computed analytically.

The search prices a policy at every step (to clip actions so the budget stays
reachable), so the cost must not build a pruned model. Every conv/linear layer
costs ``positions * kernel * out * in / groups`` MACs; ``out`` and ``in`` shrink
linearly with the channels each unit removes (the coupling tables come from
:mod:`adc.graph`), so one policy costs a few numpy operations. FLOPs are
2 x MACs, the convention of ``torch.utils.flop_counter.FlopCounterMode``; bias
additions, batch norms and activations are not counted, as there. FLOPs the
layer formulas do not cover (attention products, functional matmuls) are
measured once at analysis and stay constant: analysis excludes any unit that
would change them.

:func:`count` (from :mod:`adc.analysis.counting`) measures a real model with
``FlopCounterMode`` and is what the analytic cost is checked against.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from adc.analysis.counting import Costs, count
from adc.analysis.units import ModelGraph
from adc.utils.errors import AdcError

__all__ = ["Costs", "Policy", "check_policy", "check_round_to", "cost", "cost_of_kept", "count", "kept_vector"]

Policy = Mapping[str, float]


def check_policy(graph: ModelGraph, policy: Policy) -> None:
    """Validate a policy against a graph.

    Raises:
        AdcError: for an unknown unit or a sparsity outside [0, 1).
    """
    for name, sparsity in policy.items():
        graph.unit(name)
        # numbers.Real also admits numpy integers and floats (np.int64(0) is not an int); bool is not a sparsity.
        if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0.0 <= float(sparsity) < 1.0:
            raise AdcError(f"policy sparsity for unit {name!r} is {sparsity!r}; it must be a number in [0, 1)")


def check_round_to(round_to: object) -> int:
    """``round_to`` as an int; AdcError unless it is a positive integer (kept counts are multiples of it)."""
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise AdcError(f"round_to must be a positive integer, got {round_to!r}")
    return int(round_to)


def kept_vector(graph: ModelGraph, policy: Policy, round_to: int = 1) -> np.ndarray:
    """Channels kept per unit (in unit order) under ``policy``; missing units keep all.

    Raises:
        AdcError: for a bad policy or a ``round_to`` that is not a positive integer.
    """
    check_round_to(round_to)
    check_policy(graph, policy)
    return np.array(
        [u.kept(float(policy.get(u.name, 0.0)), round_to) for u in graph.units], dtype=np.float64
    )


def cost_of_kept(graph: ModelGraph, kept: np.ndarray) -> Costs:
    """Cost of the network when each unit keeps ``kept[i]`` channels (fast path for the search)."""
    return graph.costs(kept)


def cost(graph: ModelGraph, policy: Policy, round_to: int = 1) -> Costs:
    """Exact per-sample cost of ``policy`` without building the pruned model.

    Args:
        graph: From :func:`adc.graph.analyze`.
        policy: Unit name -> sparsity in [0, 1); units not named are not pruned.
        round_to: Kept channel counts are rounded to multiples of this, as
            :func:`adc.prune` does.

    Returns:
        MACs, FLOPs (2 x MACs) and parameters.
    """
    return cost_of_kept(graph, kept_vector(graph, policy, round_to))
