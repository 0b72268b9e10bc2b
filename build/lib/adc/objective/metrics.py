"""The metrics record a reward sees: the evaluation's accuracy metrics and every cost with its ratio.

One record per episode: what the user's (or the validation) evaluation
returned -- ``top1`` always, ``top5`` and ``loss`` and any other number when
the evaluation gives them (never invented: a function that returns only
top-1 gives a record without top-5) -- plus, for ``macs``, ``flops``,
``params``, ``energy``, every budget metric and ``latency`` when a latency
table was measured, the value, the unpruned value (``original_<key>``) and
the fraction of it (``<key>_ratio``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from adc.analysis.cost import cost_of_kept
from adc.analysis.energy import EnergyModel
from adc.analysis.graph import ModelGraph
from adc.analysis.latency import LatencyTable
from adc.objective.budgets import BUDGET_METRICS, Budget, Price
from adc.utils.errors import AdcError


def accuracy_metrics(value: Any, source: str = "evaluate") -> dict[str, float]:
    """Normalise what an evaluation returned: a float is top-1; a mapping must hold a finite ``top1``.

    Non-numeric entries of a mapping are dropped; numbers are kept as floats.

    Raises:
        AdcError: for anything else, or a top-1 that is not a finite number in [0, 1].
    """
    if isinstance(value, bool):
        raise AdcError(f"{source} returned a bool; it must return top-1 accuracy as a float, or a dict with 'top1'")
    if isinstance(value, (int, float)) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0):
        metrics = {"top1": float(value)}
    elif isinstance(value, Mapping):
        if "top1" not in value:
            raise AdcError(f"{source} returned a dict without 'top1' (keys: {', '.join(map(str, value)) or 'none'}); "
                           "return {'top1': accuracy, ...} or the accuracy as a float")
        metrics = {}
        for key, v in value.items():
            if isinstance(v, bool):
                continue
            try:
                metrics[str(key)] = float(v)
            except (TypeError, ValueError):
                continue
        if "top1" not in metrics:
            raise AdcError(f"{source} returned top1={value['top1']!r}; it must be a number")
    else:
        raise AdcError(f"{source} returned {type(value).__name__}; it must return top-1 accuracy as a float, "
                       "or a dict with 'top1' (and optionally 'top5', 'loss', ...)")
    top1 = metrics["top1"]
    if not math.isfinite(top1) or not 0.0 <= top1 <= 1.0:
        raise AdcError(f"{source} returned top1={top1}; it must be a fraction in [0, 1] (accuracy 0.9, not 90)")
    return metrics


class MetricsRecorder:
    """Builds the metrics record of a policy from its kept channels and its accuracy metrics.

    Args:
        graph: The model's graph.
        budgets: The resolved budgets (their metrics are recorded).
        energy_model: The energy model (energy is always recorded).
        latency_table: When given, predicted latency is recorded too.
    """

    def __init__(self, graph: ModelGraph, budgets: list[Budget], *, energy_model: EnergyModel | None = None,
                 latency_table: LatencyTable | None = None) -> None:
        self.graph = graph
        self.budgets = budgets
        full = cost_of_kept(graph, graph.channels)
        self._full = full
        prices: dict[str, Price] = {"energy": BUDGET_METRICS.get("energy")(graph, energy_model=energy_model)}
        if latency_table is not None:
            prices["latency"] = BUDGET_METRICS.get("latency")(graph, latency_table=latency_table)
        for b in budgets:
            prices.setdefault(b.key, b.price)
        self.prices = {k: (p, float(p(graph.channels))) for k, p in prices.items() if k not in ("macs", "flops", "params")}

    def record(self, kept: np.ndarray, metrics: Mapping[str, float]) -> dict[str, float]:
        """Accuracy metrics plus every cost of ``kept`` with its original and ratio."""
        record = {k: float(v) for k, v in metrics.items()}
        costs = cost_of_kept(self.graph, kept)
        full = self._full
        values = {"macs": (costs.macs, full.macs), "flops": (costs.flops, full.flops), "params": (costs.params, full.params)}
        for key, (price, original) in self.prices.items():
            values[key] = (price(kept), original)
        for key, (value, original) in values.items():
            record[key] = float(value)
            record[f"original_{key}"] = float(original)
            record[f"{key}_ratio"] = float(value) / max(float(original), 1e-12)
        return record
