"""Resource budgets: parse ``flops=0.5`` / ``params=1.5M``, price policies, refuse the unreachable.

A budget metric is a factory ``(graph, **context) -> price`` where ``price(kept)``
returns the metric for a vector of kept channels per unit, fast enough to call
several times per environment step (the search clips every action with it).
``flops``, ``macs`` and ``params`` are analytic (:mod:`adc.cost`); latency and
energy plug into the same registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from adc.analysis.cost import cost_of_kept
from adc.analysis.energy import EnergyPrice, load_energy_model
from adc.utils.errors import AdcError
from adc.analysis.graph import ModelGraph
from adc.analysis.space import PolicySpace
from adc.utils.bisection import smallest_fitting
from adc.utils.registry import Registry

Price = Callable[[np.ndarray], float]
BUDGET_METRICS: Registry[Callable[..., Price]] = Registry("budget")

SUFFIXES = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


@BUDGET_METRICS.register("flops")
def _flops(graph: ModelGraph, **_: Any) -> Price:
    """FLOPs per sample, 2 x MACs (FlopCounterMode's convention)."""
    return lambda kept: float(cost_of_kept(graph, kept).flops)


@BUDGET_METRICS.register("macs")
def _macs(graph: ModelGraph, **_: Any) -> Price:
    """Multiply-accumulates per sample."""
    return lambda kept: float(cost_of_kept(graph, kept).macs)


@BUDGET_METRICS.register("params")
def _params(graph: ModelGraph, **_: Any) -> Price:
    """Trainable parameters."""
    return lambda kept: float(cost_of_kept(graph, kept).params)


@BUDGET_METRICS.register("latency")
def _latency(graph: ModelGraph, *, latency_table: Any = None, **_: Any) -> Price:
    """Predicted end-to-end seconds from a measured per-layer table (:mod:`adc.latency`).

    The table must be measured beforehand and passed as ``latency_table=``:
    :func:`adc.search` and the CLI build it (or read it from the cache) when a
    latency budget or reward asks for it.
    """
    if latency_table is None:
        raise AdcError("a latency budget needs a measured latency table: pass latency_table=adc.latency.build_latency_table(...) "
                       "(adc search builds it when --budget latency=... is given)")
    latency_table.check_graph(graph)
    return latency_table.price


@BUDGET_METRICS.register("energy")
def _energy(graph: ModelGraph, *, energy_model: Any = None, **_: Any) -> Price:
    """Modelled joules per sample (:mod:`adc.energy`): arithmetic plus memory traffic."""
    return EnergyPrice(graph, load_energy_model(energy_model)).price


# Units of the metrics measured in time or energy; a plain number below 1 stays a fraction.
UNITS = {
    "latency": ("s", {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}),
    "energy": ("J", {"j": 1.0, "mj": 1e-3, "uj": 1e-6, "nj": 1e-9, "pj": 1e-12}),
}


def _parse_with_unit(text: str, key: str, value: str) -> BudgetSpec:
    base, units = UNITS[key]
    example = "latency=12ms" if key == "latency" else "energy=2mJ"
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµμ]*)\s*", value)
    unit = match.group(2).replace("µ", "u").replace("μ", "u").lower() if match else ""
    if not match or (unit and unit not in units):
        raise AdcError(f"budget {text!r}: value must be a fraction below 1 ({key}=0.5) or an amount with a unit "
                       f"({example}; units: {', '.join(u.replace('j', 'J') for u in units)})")
    number = float(match.group(1))
    if number <= 0:
        raise AdcError(f"budget {text!r}: value must be positive")
    if not unit:
        if number < 1:
            return BudgetSpec(key, number, True)
        raise AdcError(f"budget {text!r}: give a fraction below 1 or an amount with a unit, e.g. {example}")
    return BudgetSpec(key, number * units[unit], False)


FRONT_POINTS = 5
"""Points of a budget range given without a step (``latency=0.3:0.9``)."""
MAX_FRONT_POINTS = 20


class UnreachableBudget(AdcError):
    """A budget that even the most pruned policy of the space cannot meet (a finer rounding may reach it)."""


@dataclass(frozen=True)
class BudgetSpec:
    """A parsed ``KEY=VALUE`` budget: a fraction of the original, or an absolute amount.

    A range ``KEY=START:STOP[:STEP]`` (fractions) asks for a front of models, one
    per point: ``value`` is START, ``stop`` STOP, ``step`` STEP (None: :data:`FRONT_POINTS` points).
    """

    key: str
    value: float
    relative: bool
    stop: float | None = None
    step: float | None = None

    @property
    def is_range(self) -> bool:
        return self.stop is not None

    def points(self) -> list[BudgetSpec]:
        """The single budgets of a range, tightest first (a plain budget: itself)."""
        if self.stop is None:
            return [self]
        if self.step is None:
            values = np.linspace(self.value, self.stop, FRONT_POINTS)
        else:
            values = np.arange(self.value, self.stop + self.step * 1e-6, self.step)
        return [BudgetSpec(self.key, round(float(v), 10), True) for v in values]

    def __str__(self) -> str:
        """The spec as :func:`parse_budget` reads it back (absolute latency in ms, energy in mJ)."""
        if self.stop is not None:
            step = f":{self.step:g}" if self.step is not None else ""
            return f"{self.key}={self.value:g}:{self.stop:g}{step}"
        if self.relative:
            return f"{self.key}={self.value:g}"
        if self.key == "latency":
            return f"{self.key}={self.value * 1e3:.10g}ms"
        if self.key == "energy":
            return f"{self.key}={self.value * 1e3:.10g}mJ"
        return f"{self.key}={self.value:.10g}"


@dataclass
class Budget:
    """A budget resolved against one model.

    Attributes:
        key: Metric name (``flops``, ``params``...).
        limit: The absolute limit, in the metric's units.
        original: The unpruned model's value.
        price: ``price(kept)`` -> metric value.
    """

    key: str
    limit: float
    original: float
    price: Price

    @property
    def fraction(self) -> float:
        """The limit as a fraction of the unpruned model."""
        return self.limit / self.original


def parse_budget(text: str) -> BudgetSpec:
    """Parse ``flops=0.5`` (fraction), ``flops=120M`` or ``params=1.5e6`` (absolute).

    Latency and energy take a unit for absolute values: ``latency=12ms``
    (s, ms, us, ns; stored in seconds), ``energy=2mJ`` (J, mJ, uJ, nJ, pJ;
    stored in joules); ``latency=0.6`` is a fraction of the unpruned model.

    Raises:
        AdcError: for an unknown key or a malformed / non-positive value.
    """
    keys = f"keys: {', '.join(BUDGET_METRICS.names())}"  # every message names the valid keys
    key, sep, value = text.partition("=")
    key = key.strip().lower()
    if not sep or not key or not value.strip():
        raise AdcError(f"budget {text!r}: expected KEY=VALUE such as flops=0.5 or params=1.5M; keys: {', '.join(BUDGET_METRICS.names())}")
    if key not in BUDGET_METRICS:
        raise AdcError(f"budget {text!r}: unknown key {key!r}; valid: {', '.join(BUDGET_METRICS.names())}")
    if ":" in value:
        return _parse_range(text, key, value)
    if key in UNITS:
        return _parse_with_unit(text, key, value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKMGT]?)\s*", value)
    if not match:
        raise AdcError(f"budget {text!r}: value must be a fraction below 1 (0.5) or an amount with an optional K/M/G suffix (120M); {keys}")
    number = float(match.group(1))
    suffix = match.group(2).upper()
    if number <= 0:
        raise AdcError(f"budget {text!r}: value must be positive; {keys}")
    if not suffix and number < 1:
        return BudgetSpec(key, number, True)
    if not suffix and number == 1:
        raise AdcError(f"budget {text!r}: 1 would prune nothing; give a fraction below 1 or an absolute amount like {key}=120M; {keys}")
    return BudgetSpec(key, number * SUFFIXES[suffix], False)


def _parse_range(text: str, key: str, value: str) -> BudgetSpec:
    """``START:STOP[:STEP]``: fractions 0 < START < STOP < 1, a positive STEP, 2 to MAX_FRONT_POINTS points."""
    usage = f"a range is {key}=START:STOP or {key}=START:STOP:STEP with fractions 0 < START < STOP < 1 ({key}=0.3:0.9)"
    parts = value.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise AdcError(f"budget {text!r}: {usage}") from None
    if len(numbers) not in (2, 3) or not all(np.isfinite(numbers)):
        raise AdcError(f"budget {text!r}: {usage}")
    start, stop = numbers[:2]
    step = numbers[2] if len(numbers) == 3 else None
    if not 0 < start < stop < 1 or (step is not None and step <= 0):
        raise AdcError(f"budget {text!r}: {usage}")
    spec = BudgetSpec(key, start, True, stop, step)
    if not 2 <= len(spec.points()) <= MAX_FRONT_POINTS:
        raise AdcError(f"budget {text!r}: the range has {len(spec.points())} points; give a STEP that makes 2 to "
                       f"{MAX_FRONT_POINTS}")
    return spec


def resolve_budgets(specs: Iterable[BudgetSpec | str], space: PolicySpace, **context: Any) -> list[Budget]:
    """Resolve budget specs against a model, refusing any the search cannot reach.

    This is the one place a budget's reachability is checked: every later
    part (the environment's clipping, the strategies) receives resolved
    :class:`Budget` objects only.

    Args:
        specs: Parsed or textual budgets.
        space: The policy space: ``space.min_kept`` is what maximal pruning keeps.
        context: Extra inputs for metric factories (``latency_table=``, ``energy_model=``).

    Raises:
        AdcError: if a budget is above the original (nothing to do) or below
            what maximal pruning reaches; the message gives the smallest reachable value.
    """
    graph = space.graph
    budgets: list[Budget] = []
    seen = set()
    for spec in specs:
        spec = parse_budget(spec) if isinstance(spec, str) else spec
        if spec.is_range:
            raise AdcError(f"budget {spec} is a range (a front of models): resolve one of its points at a time")
        if spec.key in seen:
            raise AdcError(f"budget {spec.key!r} is given twice; give each key once")
        seen.add(spec.key)
        price = BUDGET_METRICS.get(spec.key)(graph, **context)
        original = price(graph.channels)
        limit = spec.value * original if spec.relative else spec.value
        reachable = price(space.min_kept)
        if limit >= original:
            raise AdcError(f"budget {spec}: the unpruned model already needs only {original:.4g} {spec.key}; nothing to prune")
        if reachable > limit * (1 + 1e-9):
            raise UnreachableBudget(
                f"budget {spec} is unreachable: even the maximum sparsity allowed leaves {reachable:.4g} {spec.key} "
                f"({reachable / original:.3f} of the original); the smallest reachable budget is "
                f"{spec.key}={reachable / original:.3f} (or lower the minimum kept fraction, now {space.min_keep:g})"
                + ("" if spec.relative else f"; {spec} is an amount ({limit:.4g} {spec.key}), a fraction of the "
                   f"original is written below 1 ({spec.key}=0.5)")
            )
        budgets.append(Budget(spec.key, float(limit), float(original), price))
    if not budgets:
        raise AdcError(f"no budget given; pass at least one, e.g. --budget flops=0.5 (keys: {', '.join(BUDGET_METRICS.names())})")
    return budgets


def uniform_kept(space: PolicySpace, budgets: Iterable[Budget]) -> np.ndarray:
    """Kept channels per unit of the uniform policy (one sparsity for every unit) that comes closest to
    every budget without exceeding it; the most pruned one when none fits."""
    budgets = list(budgets)

    def fits(action: float) -> bool:
        kept = space.kept_of_actions([action] * len(space.units))
        return all(b.price(kept) <= b.limit * (1 + 1e-9) for b in budgets)

    if fits(0.0):
        return space.kept_of_actions([0.0] * len(space.units))
    return space.kept_of_actions([smallest_fitting(fits, 0.0, 1.0)] * len(space.units))
