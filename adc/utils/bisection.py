"""Bisection on a monotone predicate: the one search several budget solvers share."""

from __future__ import annotations

from collections.abc import Callable


def smallest_fitting(fits: Callable[[float], bool], lo: float, hi: float, steps: int = 40) -> float:
    """The smallest value in ``[lo, hi]`` (to ``steps`` halvings) for which ``fits`` holds.

    ``fits`` must be monotone (false below some point, true from it on) and is
    assumed to hold at ``hi``; ``hi`` is returned when nothing smaller fits. Used
    to meet a budget as closely as possible: the uniform policy, a global
    threshold, NetAdapt's per-unit step.

    Args:
        fits: Whether a value meets the condition.
        lo: A value assumed not to fit (it is never returned unless it equals ``hi``).
        hi: A value assumed to fit.
        steps: Halvings of the interval.

    Returns:
        The upper end of the final interval, a value that fits (or ``hi``).
    """
    for _ in range(steps):
        mid = (lo + hi) / 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi
