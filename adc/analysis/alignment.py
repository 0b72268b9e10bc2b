"""Channel counts the runtime rewards: a short measured probe picks the multiple kept counts are rounded to.

Half the MACs is not twice as fast when the kept channel counts do not suit
the runtime: MobileNetV2 pruned uniformly to half its MACs can run slower
than the unpruned model in onnxruntime with counts rounded to 1, and close to
twice as fast with multiples of 16 (``benchmarks/results/speedup.md``):
onnxruntime's blocked layouts pad channels to 8 or 16, and vectorised kernels
waste lanes on odd counts. PyTorch eager cares much less. Which multiple pays depends on the
runtime, the device, the batch and the model, so adc measures it.

The probe: for each candidate multiple (1, 4, 8, 16, 32) and each probe
fraction of the MACs (0.5 and 0.3), the uniform policy whose counts are
rounded to that multiple and whose MACs come closest to the fraction from
below (a binary search over the shared sparsity; :meth:`Unit.kept` does the
rounding, so grouped convolutions keep whole groups and a depthwise unit
rounds its one count) is built and timed side by side with the unpruned
model, interleaved over a few rounds (:func:`adc.analysis.timers.side_by_side`).
Its *efficiency* is the measured speedup divided by the MAC reduction (1:
speed scales with MACs; lower: the rounding wastes work); a multiple's
efficiency is the geometric mean over the fractions. A multiple whose uniform
policies cannot come within 0.1 of a fraction (a unit narrower than the
multiple cannot be pruned at all) is not eligible.

The choice prefers the smaller multiple, which leaves the search more
policies: it is the smallest eligible multiple whose efficiency is within a
tolerance of the best one. The tolerance is 5% or the timing noise measured
during the probe, whichever is larger (the noise is the median, over the
copies, of half the relative spread of a copy's per-round speed ratios to
the unpruned model), so a larger multiple is chosen only when it is clearly
faster, not because one timing was lucky. When the noise is above 5%, two
more rounds are timed and the median of all five ratios taken. The engine
times the probe with the minimum of each timing's samples (the steadiest
statistic on a machine shared with other work: load only ever adds time).

The measurements are cached beside the latency table (:func:`default_cache_dir`),
one JSON file per timer key (runtime and version, device, threads), model
(its structure and input shape), batch, candidates and fractions; the choice
is recomputed from them, so a second search on the same model measures
nothing. A cache file that cannot be read is ignored with a warning.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adc.analysis.cost import cost_of_kept
from adc.analysis.graph import ModelGraph
from adc.analysis.latency import default_cache_dir, model_key
from adc.analysis.timers import Timer, side_by_side
from adc.utils.bisection import smallest_fitting
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write_text

ALIGNMENTS = (1, 4, 8, 16, 32)
"""The multiples ``round_to="auto"`` chooses among."""
PROBE_FRACTIONS = (0.5, 0.3)
"""MAC fractions of the probe's uniformly pruned copies."""
MIN_GAIN = 0.05
"""A larger multiple must be at least this much (or the measured noise, if larger) more efficient to be chosen."""
NOISY = 0.05
"""Measured noise above which the probe times two more rounds (the median of 5 ratios, not of 3)."""
REACH = 0.1
"""A multiple is eligible when its uniform policies come this close to every probe fraction."""
CACHE_FORMAT = "adc-alignment/1"

PruneTo = Callable[[np.ndarray], nn.Module]


def check_round_to_setting(value: Any, name: str = "--round-to") -> int | str:
    """A ``round_to`` setting as the search takes it: a positive integer, or ``"auto"``.

    Strings of digits (a flag, a config file) become integers.

    Raises:
        AdcError: one line naming the setting and the valid values.
    """
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AdcError(f"{name} {value!r}: must be a positive integer or auto")
    return int(value)


def uniform_kept(graph: ModelGraph, fraction: float, multiple: int) -> np.ndarray:
    """Kept counts of the uniform policy rounded to ``multiple`` whose MACs come closest to ``fraction`` from below.

    The least shared sparsity that reaches the fraction (a binary search; MACs
    fall as the sparsity rises). When no sparsity reaches it, the most pruned
    uniform policy.
    """
    full = cost_of_kept(graph, graph.channels).macs

    def kept_at(sparsity: float) -> np.ndarray:
        return np.array([u.kept(sparsity, multiple) for u in graph.units], dtype=np.float64)

    if cost_of_kept(graph, kept_at(0.99)).macs > fraction * full:
        return kept_at(0.99)
    return kept_at(smallest_fitting(lambda s: cost_of_kept(graph, kept_at(s)).macs <= fraction * full, 0.0, 0.99))


@dataclass
class AlignmentProbe:
    """What the probe measured and chose.

    Attributes:
        choice: The multiple kept counts are rounded to.
        candidates: The multiples measured.
        fractions: The probe's MAC fractions.
        mac_fractions: Per multiple, the MAC fraction its uniform policy reached at each probe fraction.
        speedups: Per multiple, the measured speedup over the unpruned model at each probe fraction.
        efficiency: Per multiple, the geometric mean of speedup x MAC fraction (None: not eligible).
        noise: Half the relative spread of a copy's per-round speed ratios, the median over the copies.
        tolerance: ``max(MIN_GAIN, noise)``.
        info: Runtime, device, threads, batch, input shape, cache file.
        measurements: Models timed by this probe (0 when it came from the cache).
    """

    choice: int
    candidates: tuple[int, ...]
    fractions: tuple[float, ...]
    mac_fractions: dict[int, list[float]]
    speedups: dict[int, list[float]]
    efficiency: dict[int, float | None]
    noise: float
    tolerance: float
    info: dict[str, Any] = field(default_factory=dict)
    measurements: int = 0

    def preference(self) -> list[int]:
        """The choice, then the smaller eligible multiples, largest first (fallbacks when a budget needs finer counts)."""
        smaller = [m for m in self.candidates if m < self.choice and self.efficiency.get(m) is not None]
        return [self.choice, *sorted(smaller, reverse=True)] + ([1] if 1 not in smaller and self.choice != 1 else [])

    def reason(self) -> str:
        """Why this multiple, with the measured numbers (one line)."""
        best = max((m for m, e in self.efficiency.items() if e is not None), key=lambda m: self.efficiency[m] or 0.0)
        parts = []
        for m in self.candidates:
            e = self.efficiency.get(m)
            speed = "/".join(f"{s:.2f}x" for s in self.speedups.get(m, []))
            parts.append(f"{m}: {speed}, efficiency {e:.2f}" if e is not None else f"{m}: not eligible")
        fractions = "/".join(f"{f:g}" for f in self.fractions)
        why = ("the most efficient" if self.choice == best else
               f"the smallest within {100 * self.tolerance:.0f}% of the most efficient ({best})")
        return (f"speedup of uniform copies at {fractions} of the MACs in {self.info.get('runtime', '?')} at batch "
                f"{self.info.get('batch', 1)}: {'; '.join(parts)}; {self.choice} is {why} (tolerance "
                f"{100 * self.tolerance:.0f}%, measured noise {100 * self.noise:.0f}%)")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for policy.json and the report)."""
        return {"choice": self.choice, "candidates": list(self.candidates), "fractions": list(self.fractions),
                "mac_fractions": {str(k): v for k, v in self.mac_fractions.items()},
                "speedups": {str(k): v for k, v in self.speedups.items()},
                "efficiency": {str(k): v for k, v in self.efficiency.items()}, "noise": self.noise,
                "tolerance": self.tolerance, "info": self.info, "measurements": self.measurements,
                "reason": self.reason()}


def choose(candidates: Sequence[int], fractions: Sequence[float], mac_fractions: dict[int, list[float]],
           speedups: dict[int, list[float]], noise: float) -> tuple[int, dict[int, float | None], float]:
    """The multiple to round to, each multiple's efficiency and the tolerance (see the module docs)."""
    efficiency: dict[int, float | None] = {}
    for m in candidates:
        reached = mac_fractions[m]
        if m != 1 and any(abs(r - f) > REACH for r, f in zip(reached, fractions)):
            efficiency[m] = None
            continue
        logs = [math.log(max(s, 1e-9) * max(r, 1e-9)) for s, r in zip(speedups[m], reached)]
        efficiency[m] = math.exp(sum(logs) / len(logs))
    tolerance = max(MIN_GAIN, float(noise))
    eligible = [m for m in candidates if efficiency[m] is not None]
    if not eligible:
        return 1, efficiency, tolerance
    best = max(efficiency[m] or 0.0 for m in eligible)
    choice = min(m for m in eligible if (efficiency[m] or 0.0) * (1.0 + tolerance) >= best)
    return choice, efficiency, tolerance


def _cache_file(cache_dir: str | Path | None, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{key['runtime']}-{key['device']}-t{key['threads']}-b{key['batch']}")[:80]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return folder / f"alignment-{slug}-{digest}.json"


def _read_cache(path: Path, key: dict[str, Any], candidates: Sequence[int], n: int) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("key") != key:
            raise ValueError("written for another model, timer or format")
        for name in ("mac_fractions", "speedups"):
            for m in candidates:
                values = data[name][str(m)]
                if len(values) != n or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
                    raise ValueError(f"{name} of {m} are not {n} positive numbers")
        if not (isinstance(data["noise"], (int, float)) and data["noise"] >= 0):
            raise ValueError("noise is not a number >= 0")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"alignment cache {path} is unusable ({exc}); ignoring it and measuring again", stacklevel=3)
        return None
    return data


def probe_alignment(
    model: nn.Module,
    example_input: torch.Tensor,
    graph: ModelGraph,
    *,
    prune_to: PruneTo,
    timer: Timer,
    batch: int = 1,
    candidates: Sequence[int] = ALIGNMENTS,
    fractions: Sequence[float] = PROBE_FRACTIONS,
    rounds: int = 3,
    cache_dir: str | Path | None = None,
) -> AlignmentProbe:
    """Measure which multiple of channels the runtime rewards for this model (see the module docs).

    Args:
        model: The unpruned model (not modified).
        example_input: An input batch; its per-sample shape is the one timed.
        graph: The model's graph.
        prune_to: ``prune_to(kept)``: a copy pruned to these counts (only its shape matters).
        timer: The runtime, device and threads the search targets.
        batch: Batch size of the timings.
        candidates: Multiples to measure (1 is always among them).
        fractions: MAC fractions of the uniform copies.
        rounds: Interleaved timing rounds.
        cache_dir: Folder of the cache files (default: the latency table's).

    Raises:
        AdcError: on a bad batch or candidate.
    """
    if batch < 1:
        raise AdcError(f"alignment probe batch {batch}: must be a positive integer")
    candidates = tuple(sorted({1, *(int(check_round_to_setting(m, "alignment candidate")) for m in candidates)}))
    fractions = tuple(float(f) for f in fractions)
    shape = tuple(example_input.shape[1:])
    key = {**timer.key(), "batch": int(batch), "model": model_key(model, shape), "candidates": list(candidates),
           "fractions": list(fractions), "format": CACHE_FORMAT}
    path = _cache_file(cache_dir, key)
    info = {**timer.key(), "batch": int(batch), "input_shape": list(shape), "cache": str(path)}
    full = cost_of_kept(graph, graph.channels).macs
    kepts = {(m, f): uniform_kept(graph, f, m) for m in candidates for f in fractions}
    mac_fractions = {m: [cost_of_kept(graph, kepts[m, f]).macs / full for f in fractions] for m in candidates}
    cached = _read_cache(path, key, candidates, len(fractions))
    if cached is not None:
        speedups = {m: [float(v) for v in cached["speedups"][str(m)]] for m in candidates}
        noise, measured = float(cached["noise"]), 0
    else:
        speedups, noise, measured = _measure(model, example_input, kepts, candidates, fractions, prune_to=prune_to,
                                             timer=timer, batch=batch, rounds=rounds)
        atomic_write_text(path, json.dumps({"format": CACHE_FORMAT, "key": key, "speedups": {str(m): v for m, v in speedups.items()},
                                            "mac_fractions": {str(m): v for m, v in mac_fractions.items()},
                                            "noise": noise}, indent=1, sort_keys=True))
    choice, efficiency, tolerance = choose(candidates, fractions, mac_fractions, speedups, noise)
    return AlignmentProbe(choice, candidates, fractions, mac_fractions, speedups, efficiency, noise, tolerance, info,
                          measured)


def _measure(model: nn.Module, example_input: torch.Tensor, kepts: dict[tuple[int, float], np.ndarray],
             candidates: Sequence[int], fractions: Sequence[float], *, prune_to: PruneTo, timer: Timer, batch: int,
             rounds: int) -> tuple[dict[int, list[float]], float, int]:
    """Time each distinct uniform copy side by side with the unpruned model; speedups per multiple and the noise."""
    distinct: dict[tuple[int, ...], int] = {}
    for kept in kepts.values():
        distinct.setdefault(tuple(int(k) for k in kept), len(distinct))
    models = [prune_to(np.array(k, dtype=np.float64)).eval() for k in distinct]
    x = example_input[:1].expand(batch, *example_input.shape[1:]).contiguous()
    per_round = side_by_side(timer, model, models, x, rounds=rounds).per_round
    if _noise(per_round) > NOISY:  # a busy machine: two more rounds, and the median of all
        more = side_by_side(timer, model, models, x, rounds=2).per_round
        per_round = [a + b for a, b in zip(per_round, more)]
    ratios = [statistics.median(r) for r in per_round]
    speedups = {m: [1.0 / ratios[distinct[tuple(int(k) for k in kepts[m, f])]] for f in fractions]
                for m in candidates}
    return speedups, _noise(per_round), len(models) + 1


def _noise(per_round: list[list[float]]) -> float:
    """Half the relative spread of a copy's per-round ratios, the median over the copies: one round's typical error."""
    return float(statistics.median([(max(r) / min(r) - 1.0) / 2 for r in per_round])) if per_round else 0.0
