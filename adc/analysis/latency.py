"""Measured latency: a per-layer lookup table (NetAdapt, Yang et al., ECCV 2018).

FLOPs are not time. For every conv/linear layer of a model the table holds the
measured latency of that layer *together with the batch norm and activation
that follow it in the forward pass* (when they do), run in isolation at a grid
of kept (input, output) channel counts the search can reach: ``points`` counts
per axis from the smallest kept count (every unit at ``min_keep``) to the full
width, multiples of the search's ``round_to`` (a runtime that rewards aligned
counts is timed at the counts its policies have, not at odd ones in between). Layers whose input (or output) channels no unit prunes have a one-point
axis, depthwise convolutions a single axis (their input and output channels
are the same channels). Between grid points the latency is bilinearly
interpolated (linearly extrapolated below the grid); after measuring, the grid
is made monotone (running maximum along each axis) so that fewer channels never
cost more, which the search's clipping (a binary search) relies on.

A policy's latency is ``scale * (sum of its layers' interpolated entries) +
constant``, calibrated on two end-to-end measurements: the unpruned model and
the model with every unit at ``min_keep``. The constant accounts for what the
table does not time (pooling, residual additions, the framework's per-call
overhead); the scale for the systematic difference between timing a layer alone
and inside the network (caches, memory allocation: isolated timings run high;
``benchmarks/results/latency_check.md`` has the figures). With a single point (``min_keep=1``), or a scale outside
[0.2, 5] (a noisy measurement), the scale is 1 and the constant is the unpruned
latency minus the sum of the unpruned entries, as in NetAdapt. Timing conv + BN +
activation together rather than the conv alone keeps the channel-dependent
part of BN and activation in the table, where it shrinks with pruning, rather
than in the constant, where it would not.

Measurements are medians of repeated timings after warm-up, through a
:class:`Timer`: :class:`TorchTimer` (PyTorch, CPU with a recorded thread count,
or CUDA with CUDA events) or :class:`OnnxTimer` (onnxruntime on the CPU). Tests
substitute a deterministic timer.

Every measurement is cached on disk, one JSON file per (device, runtime and its
version, thread count, batch): ``~/.cache/adc/latency/`` by default,
``$ADC_CACHE_DIR/latency`` when ``ADC_CACHE_DIR`` is set, or the ``cache_dir``
argument. Entries are keyed by each layer's shape (type, kernel, stride,
padding, groups, input size, following BN / activation) and channel counts, so
layers of identical shape (ResNets repeat them) share one measurement, and a
second build on the same model measures nothing. A cache file that cannot be
read, or that was written for another device / runtime / format, is ignored
with a warning and rebuilt; it is never trusted.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adc.analysis.graph import ModelGraph
from adc.analysis.space import PolicySpace
from adc.analysis.timers import Timer, make_timer
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write_text, cache_dir as adc_cache_dir

CACHE_FORMAT = "adc-latency/1"
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU, nn.Sigmoid, nn.Hardsigmoid,
               nn.Tanh, nn.ELU, nn.Mish, nn.PReLU)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

Progress = Callable[[int, int, str], None]


def default_cache_dir() -> Path:
    """``$ADC_CACHE_DIR/latency`` (default ``~/.cache/adc/latency``)."""
    return adc_cache_dir("latency")


# ------------------------------------------------------------------------------------ cache


class LatencyCache:
    """One JSON file of measurements for one timer key and batch size (see the module docs)."""

    def __init__(self, cache_dir: str | Path | None, key: dict[str, Any]) -> None:
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{key['runtime']}-{key['device']}-t{key['threads']}-b{key['batch']}")[:80]
        self.path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.path = self.path / f"{slug}-{digest}.json"
        self.layers: dict[str, dict[str, float]] = {}
        self.models: dict[str, float] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
                raise ValueError(f"not an {CACHE_FORMAT} file")
            if data.get("key") != self.key:
                raise ValueError(f"written for {data.get('key')!r}, not {self.key!r}")
            layers, models = data["layers"], data["models"]
            if not isinstance(layers, dict) or not isinstance(models, dict):
                raise ValueError("layers/models are not objects")
            for entries in [*layers.values(), models]:
                if not isinstance(entries, dict) or not all(_valid_seconds(v) for v in entries.values()):
                    raise ValueError("an entry is not a positive finite number of seconds")
        except (OSError, ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            warnings.warn(f"latency cache {self.path} is unusable ({exc}); ignoring it and measuring again", stacklevel=3)
            return
        self.layers = {k: {p: float(s) for p, s in v.items()} for k, v in layers.items()}
        self.models = {k: float(v) for k, v in models.items()}

    def forget(self, layer_keys: list[str], model_keys: list[str]) -> None:
        """Drop these entries, so the next build measures them again."""
        for key in layer_keys:
            self.layers.pop(key, None)
        for key in model_keys:
            self.models.pop(key, None)

    def save(self) -> None:
        """Write the file atomically."""
        data = {"format": CACHE_FORMAT, "key": self.key, "layers": self.layers, "models": self.models}
        atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))


def _valid_seconds(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


# ------------------------------------------------------------------------------- the table


@dataclass
class _LayerSpec:
    """How to rebuild one graph layer (with what follows it) at other channel counts."""

    name: str
    module: nn.Module  # the conv/linear itself
    norm: bool
    activation: nn.Module | None
    in_shape: tuple[int, ...]  # per-sample input shape
    depthwise: bool
    groups: int
    key: str  # shape key, channel counts excluded

    def build(self, cin: int, cout: int) -> nn.Module:
        m = self.module
        if isinstance(m, nn.Linear):
            layer: nn.Module = nn.Linear(cin, cout, bias=m.bias is not None)
        else:
            groups = cin if self.depthwise else self.groups
            layer = type(m)(cin, cout, m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                            groups=groups, bias=m.bias is not None, padding_mode=m.padding_mode)
        parts = [layer]
        if self.norm:
            dims = len(self.in_shape) - 1
            parts.append({1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}.get(dims, nn.BatchNorm1d)(cout))
        if self.activation is not None:
            act = copy.deepcopy(self.activation)
            if isinstance(act, nn.PReLU) and act.num_parameters > 1:
                act = nn.PReLU(cout)
            parts.append(act)
        return nn.Sequential(*parts) if len(parts) > 1 else layer

    def input(self, cin: int, batch: int) -> torch.Tensor:
        shape = (batch, cin, *self.in_shape[1:]) if not isinstance(self.module, nn.Linear) else (batch, *self.in_shape[:-1], cin)
        return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _layer_specs(model: nn.Module, example_input: torch.Tensor, graph: ModelGraph) -> list[_LayerSpec]:
    """Each graph layer with the batch norm / activation run right after it (leaf-module execution order)."""
    modules = dict(model.named_modules())
    calls: list[str] = []
    in_shapes: dict[str, tuple] = {}
    handles = []
    for name, m in modules.items():
        if len(list(m.children())) == 0:
            def hook(mod: nn.Module, inputs: tuple, output: Any, name: str = name) -> None:
                calls.append(name)
                if name not in in_shapes and inputs and isinstance(inputs[0], torch.Tensor):
                    in_shapes[name] = tuple(inputs[0].shape[1:])
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    first_call = {}
    for i, name in enumerate(calls):
        first_call.setdefault(name, i)
    specs = []
    for lc in graph.layers:
        m = modules[lc.name]
        i = first_call[lc.name]
        nxt = calls[i + 1: i + 3]
        norm, act = False, None
        if nxt and isinstance(modules[nxt[0]], NORMS) and modules[nxt[0]].num_features == lc.out_channels:
            norm = True
            nxt = nxt[1:]
        if nxt and isinstance(modules[nxt[0]], ACTIVATIONS):
            act = modules[nxt[0]]
        in_shape = in_shapes[lc.name]
        if isinstance(m, nn.Linear):
            desc: dict[str, Any] = {"type": "Linear", "bias": m.bias is not None}
        else:
            desc = {"type": type(m).__name__, "kernel": list(m.kernel_size), "stride": list(m.stride),
                    "padding": str(m.padding), "dilation": list(m.dilation), "padding_mode": m.padding_mode,
                    "groups": "depthwise" if lc.depthwise else m.groups, "bias": m.bias is not None}
        desc.update({"input": list(in_shape[1:]) if not isinstance(m, nn.Linear) else list(in_shape[:-1]),
                     "norm": norm, "activation": repr(act) if act is not None else None})
        specs.append(_LayerSpec(lc.name, m, norm, act, in_shape, lc.depthwise, 1 if lc.depthwise else lc.groups,
                                json.dumps(desc, sort_keys=True)))
    return specs


def _axis(full: float, low: float, points: int, multiple: int = 1) -> list[int]:
    """``points`` channel counts from ``low`` to ``full`` (rounded to ``multiple``, deduplicated)."""
    if low >= full or points < 2:
        return [int(full)]
    counts = {int(full)}
    for v in np.linspace(low, full, points):
        counts.add(int(min(full, max(multiple, round(v / multiple) * multiple))))
    return sorted(counts)


class LatencyTable:
    """Per-layer latency grids of one model, and the vectorised ``price(kept)`` in seconds.

    Attributes:
        layers: Layer names (``graph.layers`` order).
        grid_in, grid_out: Per layer, the measured kept input / output channel counts.
        values: Per layer, seconds at ``(grid_in[i], grid_out[j])`` (monotone).
        measured_total: The unpruned model's measured end-to-end seconds.
        constant, scale: ``price = scale * sum(entries) + constant`` (two-point calibration, see the module docs).
        measured_min: Measured seconds with every unit at ``min_keep`` (None when not calibrated).
        info: Runtime, device, threads, batch, input shape.
        measurements: How many timings this build made (0 when all came from the cache).
    """

    def __init__(self, graph: ModelGraph, grid_in: list[list[int]], grid_out: list[list[int]],
                 values: list[np.ndarray], measured_total: float, info: dict[str, Any], measurements: int = 0,
                 measured_min: float | None = None, min_kept: np.ndarray | None = None) -> None:
        self.graph = graph
        self.layers = [lc.name for lc in graph.layers]
        self.grid_in, self.grid_out = grid_in, grid_out
        self.values = [np.maximum.accumulate(np.maximum.accumulate(np.asarray(v, dtype=np.float64), 0), 1) for v in values]
        self.info = info
        self.measurements = measurements
        self.measured_total = float(measured_total)
        # Padded arrays for a vectorised bilinear lookup; one-point axes get a duplicate point one channel up.
        n = len(self.layers)
        p = max(2, max(len(g) for g in grid_in), max(len(g) for g in grid_out))
        self._gi = np.full((n, p), np.inf)
        self._go = np.full((n, p), np.inf)
        self._t = np.zeros((n, p, p))
        self._ni = np.zeros(n, dtype=np.int64)
        self._no = np.zeros(n, dtype=np.int64)
        for li, (gi, go, v) in enumerate(zip(grid_in, grid_out, self.values)):
            gi2, go2, v2 = list(gi), list(go), v
            if len(gi2) == 1:
                gi2, v2 = [gi2[0], gi2[0] + 1], np.vstack([v2, v2])
            if len(go2) == 1:
                go2, v2 = [go2[0], go2[0] + 1], np.hstack([v2, v2])
            self._gi[li, :len(gi2)] = gi2
            self._go[li, :len(go2)] = go2
            self._t[li, :len(gi2), :len(go2)] = v2
            self._ni[li], self._no[li] = len(gi2), len(go2)
        # Flat views for the lookup: both axes at once (rows 0..n-1: input axis, n..2n-1: output axis).
        self._p = p
        self._grid = np.vstack([self._gi, self._go])
        self._last = np.concatenate([self._ni, self._no]) - 2
        self._row_base = np.arange(2 * n) * p
        self._flat_grid = self._grid.ravel()
        self._flat_t = self._t.ravel()
        self._t_base = np.arange(n) * p * p
        self._terms = np.vstack([graph.in_terms, graph.out_terms])
        self._full = np.concatenate([graph.in_full, graph.out_full])
        # Calibration: price = scale * sum(entries) + constant, through the two measured end-to-end points
        # (unpruned, and every unit at min_keep) when both are known; otherwise scale 1.
        full_sum = float(self.layer_latency(graph.channels).sum())
        self.scale = 1.0
        self.measured_min = measured_min
        self.min_kept = min_kept
        if measured_min is not None and min_kept is not None:
            min_sum = float(self.layer_latency(min_kept).sum())
            if full_sum > min_sum and self.measured_total > measured_min:
                scale = (self.measured_total - measured_min) / (full_sum - min_sum)
                if 0.2 <= scale <= 5.0:  # outside: a noisy measurement; keep the plain sum
                    self.scale = scale
        self.constant = self.measured_total - self.scale * full_sum

    def implausible(self) -> str | None:
        """Why the table cannot be trusted, or None.

        The part of the latency outside the timed layers (pooling, additions,
        per-call overhead) is ``constant``; when it is negative by more than a
        quarter of the whole model, or a fully pruned policy is predicted to take
        no time, the layers timed alone took far longer than the model runs: the
        timings were disturbed.
        """
        if self.constant < -0.25 * self.measured_total:
            return (f"{1e3 * self.constant:.3f} ms outside the table's layers (the whole model measured "
                    f"{1e3 * self.measured_total:.3f} ms)")
        if self.min_kept is not None and self.price(self.min_kept) <= 0:
            return "a fully pruned policy is predicted to take no time"
        return None

    def layer_latency(self, kept: np.ndarray) -> np.ndarray:
        """Seconds of every layer (with its BN / activation) when each unit keeps ``kept`` channels."""
        g = self.graph
        x = self._full - self._terms @ (g.channels - np.asarray(kept, dtype=np.float64))  # kept in (n) then out (n)
        idx = np.minimum(np.maximum((self._grid <= x[:, None]).sum(1) - 1, 0), self._last)
        flat = self._row_base + idx
        x0 = self._flat_grid[flat]
        frac = (x - x0) / (self._flat_grid[flat + 1] - x0)
        n, p = len(self.layers), self._p
        i, o, ti, to = idx[:n], idx[n:], frac[:n], frac[n:]
        base = self._t_base + i * p + o
        t = self._flat_t
        v = ((1 - ti) * ((1 - to) * t[base] + to * t[base + 1])
             + ti * ((1 - to) * t[base + p] + to * t[base + p + 1]))
        return np.maximum(v, 0.0)

    def price(self, kept: np.ndarray) -> float:
        """Predicted end-to-end seconds of the model pruned to ``kept`` channels per unit."""
        return float(self.scale * self.layer_latency(kept).sum() + self.constant)

    __call__ = price

    def check_graph(self, graph: ModelGraph) -> None:
        """Raise AdcError unless this table was built for ``graph``'s layers."""
        if [lc.name for lc in graph.layers] != self.layers or not np.array_equal(graph.channels, self.graph.channels):
            raise AdcError("the latency table was built for another model (its layers differ); build it for this model")


def model_key(model: nn.Module, shape: tuple[int, ...]) -> str:
    """A model's structure and input shape (not its weights: they do not change the time), hashed."""
    return hashlib.sha256(f"{model!r}|{list(shape)}".encode()).hexdigest()[:24]


PruneTo = Callable[[np.ndarray], nn.Module]
"""``prune_to(kept)``: a copy of the model pruned to ``kept`` channels per unit (the latency table's min anchor)."""


def build_latency_table(
    model: nn.Module,
    example_input: torch.Tensor,
    space: PolicySpace,
    *,
    prune_to: PruneTo | None = None,
    batch: int = 1,
    timer: Timer | None = None,
    runtime: str = "torch",
    device: str = "cpu",
    threads: int | None = 1,
    cache_dir: str | Path | None = None,
    points: int = 5,
    progress: Progress | None = None,
) -> LatencyTable:
    """Measure (or read from the cache) the latency table of ``model``.

    Args:
        model: The unpruned model (not modified).
        example_input: An input batch; its per-sample shape is the one timed.
        space: The search's policy space: the grid spans the kept counts it can reach.
        prune_to: Builds the model pruned to every unit's minimum, the second
            calibration anchor; without it the table is calibrated on the unpruned model only.
        batch: Batch size of every timing.
        timer: A ready timer (tests pass a deterministic one); otherwise one of
            ``runtime`` on ``device`` with ``threads`` (default 1, as ``adc search``).
        cache_dir: Folder of the cache files (default :func:`default_cache_dir`).
        points: Grid points per axis.
        progress: Called with ``(done, total, layer name)`` as layers are measured.

    Returns:
        The :class:`LatencyTable`.

    Raises:
        AdcError: on a bad batch, or when the measurements stay implausible after one re-measurement
            (the layers timed alone take far longer than the whole model: a machine too busy to time).
    """
    if batch < 1:
        raise AdcError(f"latency batch {batch}: must be a positive integer")
    timer = timer or make_timer(runtime, device, threads)
    graph = space.graph
    cache = LatencyCache(cache_dir, {**timer.key(), "batch": int(batch), "format": CACHE_FORMAT})
    specs = _layer_specs(model, example_input, graph)
    grids = _grids(specs, graph, space.min_kept, points, space.round_to)
    whole = model_key(model, tuple(example_input.shape[1:]))
    calibrate = prune_to is not None and bool((space.min_kept < graph.channels).any())
    min_key = f"{whole}|min_kept={hashlib.sha256(space.min_kept.tobytes()).hexdigest()[:12]}"
    for attempt in range(2):
        measurements = _measure(model, example_input, specs, grids, cache, timer, batch=batch, model_key=whole,
                                min_key=min_key if calibrate else None, space=space, prune_to=prune_to,
                                progress=progress)
        values = [_grid_values(cache.layers[spec.key], spec, grid) for spec, grid in zip(specs, grids)]
        info = {**timer.key(), "batch": int(batch), "input_shape": list(example_input.shape[1:]), "cache": str(cache.path)}
        table = LatencyTable(graph, [g[0] for g in grids], [g[1] for g in grids], values, cache.models[whole], info,
                             measurements, cache.models.get(min_key) if calibrate else None, space.min_kept)
        problem = table.implausible()
        if problem is None:
            return table
        if attempt == 0:  # a burst of load during some timings: measure this model's entries once more
            warnings.warn(f"latency table of {type(model).__name__}: {problem}; measuring it again", stacklevel=2)
            cache.forget([spec.key for spec in specs], [whole, min_key])
    raise AdcError(f"the latency table of {type(model).__name__} is implausible after measuring it twice ({problem}); "
                   "time on a quieter machine, or with --threads 1")


def _grids(specs: list[_LayerSpec], graph: ModelGraph, min_kept: np.ndarray, points: int,
           round_to: int = 1) -> list[tuple[list[int], list[int], list[tuple[int, int]]]]:
    """Per layer: the kept input counts, output counts and (in, out) pairs to time.

    Grid counts are multiples of the search's ``round_to`` (of the groups in a
    grouped convolution), the counts its policies have: a runtime that
    rewards aligned counts is timed at aligned counts, not at odd ones.
    """
    out_low, in_low = graph.layer_channels(min_kept)
    grids = []
    for li, spec in enumerate(specs):
        lc = graph.layers[li]
        mult = spec.groups if spec.groups > 1 else max(1, int(round_to))
        gi = _axis(lc.in_channels, in_low[li], points, mult)
        if spec.depthwise:
            ratio = lc.out_channels // lc.in_channels
            go = [lc.out_channels]
            pairs = [(c, c * ratio) for c in gi]
        else:
            go = _axis(lc.out_channels, out_low[li], points, mult)
            pairs = [(ci, co) for ci in gi for co in go]
        grids.append((gi, go, pairs))
    return grids


def _grid_values(entries: dict[str, float], spec: _LayerSpec, grid: tuple[list[int], list[int], list]) -> np.ndarray:
    gi, go, pairs = grid
    if spec.depthwise:
        return np.array([[entries[f"{ci},{co}"]] for ci, co in pairs])
    return np.array([[entries[f"{ci},{co}"] for co in go] for ci in gi])


def _measure(model: nn.Module, example_input: torch.Tensor, specs: list[_LayerSpec], grids: list, cache: LatencyCache,
             timer: Timer, *, batch: int, model_key: str, min_key: str | None, space: PolicySpace,
             prune_to: PruneTo | None, progress: Progress | None) -> int:
    """Time every grid entry and end-to-end anchor the cache lacks; return how many timings were made."""
    todo: dict[str, set[tuple[int, int]]] = {}
    for spec, (_, _, pairs) in zip(specs, grids):
        have = cache.layers.get(spec.key, {})
        todo.setdefault(spec.key, set()).update(p for p in pairs if f"{p[0]},{p[1]}" not in have)
    anchors: dict[str, nn.Module] = {}
    if model_key not in cache.models:
        anchors[model_key] = copy.deepcopy(model)
    if min_key is not None and min_key not in cache.models and prune_to is not None:
        anchors[min_key] = prune_to(space.min_kept)
    total = sum(len(v) for v in todo.values()) + len(anchors)
    done = 0
    # The end-to-end anchors are timed before and after the layers, keeping the smaller of each pair:
    # a burst of load during one timing must not shift every prediction.
    x = example_input[:1].expand(batch, *example_input.shape[1:]).contiguous()
    first = {k: float(timer.time(m, x)) for k, m in anchors.items()}
    by_key = {s.key: s for s in specs}
    for key, pairs in todo.items():
        spec = by_key[key]
        entries = cache.layers.setdefault(key, {})
        for cin, cout in sorted(pairs):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                module = spec.build(cin, cout)
            entries[f"{cin},{cout}"] = max(float(timer.time(module, spec.input(cin, batch))), 1e-9)
            done += 1
            if progress:
                progress(done, total, spec.name)
        if pairs:
            cache.save()  # after each layer shape: an interrupted build keeps what it measured
    for key, m in anchors.items():
        cache.models[key] = max(min(first[key], float(timer.time(m, x))), 1e-9)
        done += 1
        if progress:
            progress(done, total, "whole model")
    if anchors:
        cache.save()
    return done + len(first)
