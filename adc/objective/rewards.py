"""Rewards: what the search maximises, from one metrics record per episode.

A reward is a function of a metrics record (a dict) returning a float. The
record holds ``top1``, ``top5``, ``loss`` and, for each cost (``macs``,
``flops``, ``params``, ``energy`` in joules, ``latency`` in seconds when a
latency table was measured, and any other budget metric), its value, its
unpruned value (``original_flops``) and its fraction of the original (``flops_ratio``).

Built-in rewards live in :data:`REWARDS`; ``package.module:fn`` or
``path/to/file.py:fn`` plugs in a user function. A plugin is checked once, on
the unpruned model's metrics, before the search spends any time.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from adc.utils.errors import AdcError
from adc.utils.plugins import is_plugin_spec, load_callable
from adc.utils.registry import Registry

Reward = Callable[[Mapping[str, Any]], float]
REWARDS: Registry[Reward] = Registry("reward")


@REWARDS.register("acc")
def acc(m: Mapping[str, Any]) -> float:
    """Top-1 accuracy: AMC's default when the budget is a hard constraint."""
    return float(m["top1"])


@REWARDS.register("loss")
def loss(m: Mapping[str, Any]) -> float:
    """Negative cross-entropy on the reward images, under a hard budget like ``acc``.

    A continuous score: it ranks close candidates better than their top-1 on the
    same images (on the Fashion-MNIST ResNet-20 at 50% FLOPs, as well as top-1
    on five times as many; ``benchmarks/results/reward_ranking.md``), at no cost.
    """
    return -float(m["loss"])


@REWARDS.register("acc_flops")
def acc_flops(m: Mapping[str, Any]) -> float:
    """AMC's ``-error x log(FLOPs)``: prefers fewer FLOPs at equal accuracy."""
    return -(1.0 - float(m["top1"])) * math.log(float(m["flops"]))


@REWARDS.register("acc_params")
def acc_params(m: Mapping[str, Any]) -> float:
    """``-error x log(params)``: prefers fewer parameters at equal accuracy."""
    return -(1.0 - float(m["top1"])) * math.log(float(m["params"]))


@REWARDS.register("acc_latency")
def acc_latency(m: Mapping[str, Any]) -> float:
    """``-error x log(1 + latency in microseconds)``: prefers faster networks at equal accuracy.

    Needs a latency table (``adc search`` measures one when this reward is chosen).
    Microseconds (and the 1 +) keep the logarithm positive, as FLOPs counts do for ``acc_flops``.
    """
    return -(1.0 - float(m["top1"])) * math.log1p(float(m["latency"]) * 1e6)


@REWARDS.register("acc_energy")
def acc_energy(m: Mapping[str, Any]) -> float:
    """``-error x log(1 + energy in picojoules)``: prefers less energy at equal accuracy."""
    return -(1.0 - float(m["top1"])) * math.log1p(float(m["energy"]) * 1e12)


# Rewards that read a metric only available with a measured latency table.
NEEDS_LATENCY = frozenset({"acc_latency"})


def get_reward(spec: str | Reward) -> Reward:
    """A reward by registry name, plugin spec, or callable.

    Raises:
        AdcError: unknown name (lists the valid ones), unimportable plugin, or a
            function that cannot take one argument.
    """
    if callable(spec):
        fn = spec
        label = getattr(spec, "__name__", "reward")
    elif spec in REWARDS:
        return REWARDS.get(spec)
    elif is_plugin_spec(spec):
        fn = load_callable(spec, "reward")
        label = spec
    else:
        raise AdcError(f"unknown reward {spec!r}; valid: {', '.join(REWARDS.names())}, or package.module:fn / file.py:fn")
    try:
        inspect.signature(fn).bind({})
    except TypeError:
        raise AdcError(f"reward {label!r} must take exactly one argument (the metrics record); its signature is {inspect.signature(fn)}") from None
    except ValueError:  # builtins without a signature
        pass
    return fn


def check_reward(fn: Reward, record: Mapping[str, Any], label: str = "reward",
                 when: str = "on the unpruned model's metrics") -> float:
    """Call ``fn`` on a metrics record and insist on a finite number.

    The search calls it once on the unpruned model's record before any
    episode, and then at every episode, so a plug-in that fails late (returns
    NaN or a string, raises) stops the search with one line instead of putting
    a NaN into the history or the agent.

    Args:
        when: Where the call happens, for the message ("at episode 12").

    Raises:
        AdcError: if it raises or returns a non-number, NaN or infinity.
    """
    try:
        value = fn(dict(record))
    except Exception as exc:
        raise AdcError(f"{label} failed {when}: {type(exc).__name__}: {exc}; record keys: {', '.join(sorted(record))}") from exc
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise AdcError(f"{label} returned {type(value).__name__} {value!r} {when}; it must return a float")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AdcError(f"{label} returned {value!r} {when}; it must return a float") from None
    if not math.isfinite(number):
        raise AdcError(f"{label} returned {number} {when}; it must return a finite float")
    return number


def reward_label(spec: str | Reward) -> str:
    """How messages name a reward: ``reward 'acc'`` or ``reward my_fn``."""
    return f"reward {spec!r}" if isinstance(spec, str) else f"reward {getattr(spec, '__name__', 'function')}"
