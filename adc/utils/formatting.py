"""How adc writes numbers for people: scaled counts, percentages, energies, times, speedups, one-line errors."""

from __future__ import annotations

from typing import Any

import math


def human(n: float) -> str:
    """A count with a K/M/G suffix: 1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals; 'n/a' for None or NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def energy(joules: float) -> str:
    """Joules in the unit that gives 1-999: '123.9 mJ', '4.56 uJ'."""
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9)):
        if abs(joules) >= scale:
            return f"{joules / scale:.4g} {unit}"
    return f"{joules / 1e-12:.4g} pJ"


def seconds(s: float) -> str:
    """Seconds in the unit that gives 1-999: '12.3 ms', '450 us'."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.4g} {unit}"
    return f"{s / 1e-9:.4g} ns"


def speedup(ratio: float) -> str:
    """'1.42x faster', '0.95x, 5% slower', or '1.00x, no measurable change' within half a percent.

    Never 'faster' for a slowdown, nor for a ratio that rounds to 1.00x.
    """
    if ratio >= 1.005:
        return f"{ratio:.2f}x faster"
    if ratio > 0.995:
        return f"{ratio:.2f}x, no measurable change"
    return f"{ratio:.2f}x, {100 * (1 / ratio - 1):.0f}% slower"


def table_cell(value: Any, kind: str = "") -> str:
    """A value for a results table: ``pct`` (a fraction as 12.34%), ``ratio`` (0.123), ``speed`` (1.23x), else as is; blank when missing."""
    if value is None or value == "":
        return ""
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "ratio":
        return f"{value:.3f}"
    if kind == "speed":
        return f"{value:.2f}x"
    return str(value)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters of it)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit]}" if text else type(exc).__name__
