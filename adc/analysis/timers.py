"""Timing a module: the median seconds of one forward pass, in PyTorch (CPU or CUDA events) or onnxruntime.

Used by the latency lookup table (:mod:`adc.analysis.latency`), the
channel-alignment probe (:mod:`adc.analysis.alignment`), the measured check
of latency budgets and the measured speedups of every report. A timer's
:meth:`Timer.key` (runtime and version, device, threads, statistic, clock)
keys every cache of measurements. Tests substitute a deterministic timer.

With one CPU thread a timer reads the process's CPU time, not the elapsed
time: on a machine shared with other work, other processes taking turns on
the core add their time to every elapsed timing (on 2 busy cores, speed
ratios of the same two models ranged 1.1-2.8x by elapsed time and 1.75-1.76x
by CPU time), while a single-threaded forward pass that is not interrupted
takes the same CPU time as elapsed time. Several threads, or a GPU, are timed
by elapsed time (CUDA events). Ratios are measured side by side
(:func:`side_by_side`): the reference and the candidates interleaved, round
after round.
"""

from __future__ import annotations

import copy
import math
import platform
import statistics
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adc.analysis.onnx_program import onnx_program
from adc.utils.device import check_device, torch_threads
from adc.utils.errors import AdcError

RUNTIMES = ("torch", "onnxruntime")
CLOCKS = ("auto", "wall", "cpu")
"""``wall``: elapsed time; ``cpu``: the process's CPU time (one thread: the latency on an idle core, unaffected by
other processes taking turns on it); ``auto``: ``cpu`` with one thread on the CPU, else ``wall``."""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


class Timer:
    """Times a module on an input: the median seconds of one forward pass.

    Subclasses set ``runtime``, ``device``, ``threads`` and ``version`` (they
    key the cache) and implement :meth:`time`.
    """

    runtime: str = "stub"
    device: str = "cpu"
    threads: int = 1
    version: str = ""

    def time(self, module: nn.Module, x: torch.Tensor) -> float:
        """Median seconds of ``module(x)``."""
        raise NotImplementedError

    def runner(self, module: nn.Module, x: torch.Tensor) -> Callable[[], float]:
        """A function returning the median seconds of ``module(x)`` anew at each call, prepared once.

        Side-by-side timings call it round after round; a runtime that must
        prepare a module first (onnxruntime exports it) does so once here.
        """
        return lambda: self.time(module, x)

    def key(self) -> dict[str, Any]:
        """What a measurement depends on besides the layer: cache files are keyed by it."""
        device = f"cuda:{torch.cuda.get_device_name()}" if self.device.startswith("cuda") else f"cpu:{_cpu_name()}"
        key = {"runtime": self.runtime, "version": self.version, "device": device, "threads": int(self.threads)}
        if getattr(self, "statistic", "median") != "median":
            key["statistic"] = self.statistic
        if getattr(self, "clock", "wall") != "wall":
            key["clock"] = self.clock
        return key

    def _configure(self, *, warmup: int, repeats: int, min_sample: float, statistic: str,
                   max_seconds: float | None, clock: str) -> None:
        """Store the sampling settings (after ``device`` and ``threads``); resolve ``clock``."""
        if statistic not in ("median", "min"):
            raise AdcError(f"timing statistic {statistic!r}: valid: median, min")
        if clock not in CLOCKS:
            raise AdcError(f"timing clock {clock!r}: valid: {', '.join(CLOCKS)}")
        self.warmup, self.repeats, self.min_sample = warmup, repeats, min_sample
        self.statistic, self.max_seconds = statistic, max_seconds
        on_cpu = not self.device.startswith("cuda")
        if clock == "cpu" and not on_cpu:
            raise AdcError(f"timing clock 'cpu' times the CPU; {self.device} is timed with CUDA events")
        self.clock = "cpu" if on_cpu and (clock == "cpu" or (clock == "auto" and self.threads == 1)) else "wall"

    def _cpu_clock(self) -> Callable[[Callable[[], Any], int], float] | None:
        """The process's CPU time when ``clock`` is ``cpu``, else None (wall time)."""
        return _process_time if getattr(self, "clock", "wall") == "cpu" else None


def _process_time(fn: Callable[[], Any], n: int) -> float:
    """CPU seconds this process spends on ``n`` calls: with one thread, the latency on an idle core."""
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return time.process_time() - t0


def _median_time(run: Callable[[], Any], *, warmup: int, repeats: int, min_sample: float,
                 clock: Callable[[Callable[[], Any], int], float] | None = None, statistic: str = "median",
                 max_seconds: float | None = None) -> float:
    """Median (or min) over ``repeats`` samples of the mean time of ``run``; each sample loops long enough to last ``min_sample``.

    With ``max_seconds``, sampling stops once the samples have lasted that long (at least 3 are taken): a slow
    model at a large batch is not timed for minutes.
    """

    def wall(fn: Callable[[], Any], n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0

    clock = clock or wall
    for _ in range(warmup):
        run()
    once = max(clock(run, 1), 1e-7)
    inner = max(1, min(1000, int(math.ceil(min_sample / once))))
    samples: list[float] = []
    for _ in range(repeats):
        samples.append(clock(run, inner) / inner)
        if max_seconds is not None and len(samples) >= 3 and sum(samples) * inner >= max_seconds:
            break
    return min(samples) if statistic == "min" else statistics.median(samples)


class TorchTimer(Timer):
    """PyTorch eager, in eval mode under ``torch.inference_mode``; CPU (``threads`` intra-op threads) or CUDA events.

    Args:
        device: ``cpu`` or ``cuda[:N]``.
        threads: CPU threads (default: ``torch.get_num_threads()``).
        warmup, repeats, min_sample: Warm-up calls, timed samples, and
            the least seconds one sample lasts (short layers are looped).
        statistic: ``median`` of the samples (default) or ``min`` (steadier on a
            machine shared with other work).
        max_seconds: Stop sampling once the samples lasted this long (at least 3; None: all ``repeats``).
        clock: ``auto`` (default: the process's CPU time with one CPU thread, where other processes taking
            turns on the core would otherwise add their time; elapsed time otherwise), ``wall`` or ``cpu``.
    """

    runtime = "torch"

    def __init__(self, device: str = "cpu", threads: int | None = None, *, warmup: int = 3, repeats: int = 7,
                 min_sample: float = 0.002, statistic: str = "median", max_seconds: float | None = None,
                 clock: str = "auto") -> None:
        check_device(device)
        self.device = device
        self.threads = int(threads or torch.get_num_threads())
        self.version = torch.__version__
        self._configure(warmup=warmup, repeats=repeats, min_sample=min_sample, statistic=statistic,
                        max_seconds=max_seconds, clock=clock)

    def time(self, module: nn.Module, x: torch.Tensor) -> float:
        return self.runner(module, x)()

    def runner(self, module: nn.Module, x: torch.Tensor) -> Callable[[], float]:
        module = module.to(self.device).eval()
        x = x.to(self.device)
        clock = self._cpu_clock()
        if self.device.startswith("cuda"):
            def clock(fn: Callable[[], Any], n: int) -> float:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(n):
                    fn()
                end.record()
                torch.cuda.synchronize()
                return start.elapsed_time(end) / 1000.0

        def run() -> float:
            with torch_threads(self.threads), torch.inference_mode():
                return _median_time(lambda: module(x), warmup=self.warmup, repeats=self.repeats,
                                    min_sample=self.min_sample, clock=clock, statistic=self.statistic,
                                    max_seconds=self.max_seconds)

        return run


class OnnxTimer(Timer):
    """onnxruntime on the CPU (all graph optimisations, ``threads`` intra-op threads); the module is exported to ONNX first.

    Arguments as :class:`TorchTimer`'s.
    """

    runtime = "onnxruntime"

    def __init__(self, device: str = "cpu", threads: int | None = None, *, warmup: int = 3, repeats: int = 7,
                 min_sample: float = 0.002, statistic: str = "median", max_seconds: float | None = None,
                 clock: str = "auto") -> None:
        check_device(device)
        if device != "cpu":
            raise AdcError(f"--runtime onnxruntime measures on the CPU only; got --device {device!r} (use --runtime torch for cuda)")
        try:
            import onnxruntime as ort
        except ImportError:
            raise AdcError("--runtime onnxruntime needs onnxruntime: pip install 'adc[onnx]'") from None
        self._ort = ort
        self.device = "cpu"
        self.threads = int(threads or torch.get_num_threads())
        # The graph timed is the dynamo exporter's (was the TorchScript one): tables measured before do not apply.
        self.version = f"{ort.__version__} dynamo-export"
        self._programs: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()
        self._configure(warmup=warmup, repeats=repeats, min_sample=min_sample, statistic=statistic,
                        max_seconds=max_seconds, clock=clock)

    def session(self, module: nn.Module | bytes, x: torch.Tensor) -> Any:
        """An onnxruntime session running ``module`` (exported at ``x``'s shape), or ONNX bytes as they are."""
        # The exporter of adc export, with its free batch axis: the graph timed is the graph a user deploys.
        # One export per module (several batch sizes of the same model share it; exporting takes seconds).
        if isinstance(module, bytes):
            data = module
        else:
            data = self._programs.get(module)
            if data is None:
                data = self._programs[module] = onnx_program(module.cpu(), x.cpu()).data
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return self._ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def time(self, module: nn.Module, x: torch.Tensor) -> float:
        return self.runner(module, x)()

    def runner(self, module: nn.Module, x: torch.Tensor) -> Callable[[], float]:
        session = self.session(module, x)
        feed = {session.get_inputs()[0].name: x.cpu().numpy()}
        return lambda: _median_time(lambda: session.run(None, feed), warmup=self.warmup, repeats=self.repeats,
                                    min_sample=self.min_sample, clock=self._cpu_clock(), statistic=self.statistic,
                                    max_seconds=self.max_seconds)


def make_timer(runtime: str = "torch", device: str = "cpu", threads: int | None = None, **options: Any) -> Timer:
    """The timer for a runtime name (``torch`` or ``onnxruntime``).

    Raises:
        AdcError: unknown runtime, absent device, onnxruntime not installed or asked for cuda.
    """
    if runtime == "torch":
        return TorchTimer(device, threads, **options)
    if runtime == "onnxruntime":
        return OnnxTimer(device, threads, **options)
    raise AdcError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")


@dataclass
class SideBySide:
    """Timings of a reference module and of candidates, taken interleaved in the same rounds.

    Attributes:
        reference_s: Median seconds of the reference over the rounds.
        candidate_s: Median seconds of each candidate over the rounds.
        ratios: Per candidate, the median over rounds of ``candidate / reference`` timed in the same round
            (a burst of load that slows one round slows both sides of its ratio).
        spread: The relative spread (max / min - 1) of the reference's rounds: how noisy the machine was.
        spreads: Per candidate, the relative spread of its per-round ratios: how far its ratio can be trusted.
        per_round: Per candidate, its ratio in each round.
        samples: Per module (the reference first), its seconds in each round.
    """

    reference_s: float
    candidate_s: list[float]
    ratios: list[float]
    spread: float
    spreads: list[float]
    per_round: list[list[float]] = field(default_factory=list)
    samples: list[list[float]] = field(default_factory=list)

    def median_round(self, candidate: int = 0) -> tuple[float, float]:
        """The reference's and the candidate's seconds in the round whose ratio is the (lower) median.

        A speedup quoted with these two timings is their quotient, which the
        medians of each side apart need not be under load.
        """
        ratios = self.per_round[candidate]
        k = sorted(range(len(ratios)), key=ratios.__getitem__)[(len(ratios) - 1) // 2]
        return self.samples[0][k], self.samples[candidate + 1][k]


def side_by_side(timer: Timer, reference: nn.Module, candidates: Sequence[nn.Module], x: torch.Tensor, *,
                 rounds: int = 3) -> SideBySide:
    """Time ``reference`` and every candidate on ``x``, interleaved, ``rounds`` times (order reversed every round).

    Every ratio adc reports about speed is measured this way: both sides in
    the same process, with the same runtime, threads and input, moments apart.
    """
    runners = [timer.runner(reference, x), *[timer.runner(c, x) for c in candidates]]
    samples: list[list[float]] = [[] for _ in runners]
    for r in range(max(1, rounds)):
        order = range(len(runners)) if r % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            samples[i].append(max(float(runners[i]()), 1e-12))
    ref = samples[0]
    per_round = [[c / a for c, a in zip(cand, ref)] for cand in samples[1:]]
    return SideBySide(statistics.median(ref), [statistics.median(c) for c in samples[1:]],
                      [statistics.median(r) for r in per_round], max(ref) / min(ref) - 1.0,
                      [max(r) / min(r) - 1.0 for r in per_round], per_round, samples)


SPEEDUP_TIMING = {"warmup": 3, "repeats": 9, "min_sample": 0.001, "statistic": "min", "max_seconds": 1.0}
"""The timer settings of :func:`measured_speedup`: many short samples, the fastest kept."""


def _on_cpu(module: nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in [*module.parameters(), *module.buffers()])


def measured_speedup(original: nn.Module, pruned: nn.Module, example_input: torch.Tensor, *, runtime: str = "torch",
                     device: str = "cpu", threads: int | None = 1, batch: int = 1, rounds: int = 3,
                     timer: Timer | None = None) -> dict[str, Any]:
    """Time the unpruned and the pruned model side by side (interleaved, ``rounds`` each, median); cheap.

    Each timing is the minimum of a few samples (load on a shared machine only ever adds time); the
    speedup is the round whose ratio is the median, and its two timings are the ones returned.

    Returns:
        ``{"original_s", "pruned_s", "speedup", "runtime", "device", "threads", "batch", "clock"}``, with
        ``speedup == original_s / pruned_s`` (the median round's pair).
    """
    # Short samples, many of them, the fastest kept: on a machine shared with other work, a sample that
    # lasts a scheduler slice is slowed by it; short ones often fit between (measured: ratios steady to 2%
    # under a load of 7 on 2 cores, against 0.70-0.97 with 5 ms samples).
    timer = timer or make_timer(runtime, device, threads, **SPEEDUP_TIMING)
    x = example_input[:1].to("cpu").expand(batch, *example_input.shape[1:]).contiguous()
    # On the CPU, models already there are timed as they are (a timer given for several batches reuses their
    # exports); a timer on a GPU moves what it times, so it gets copies.
    reuse = timer.device == "cpu"
    first, second = (m.eval() if reuse and _on_cpu(m) else copy.deepcopy(m).cpu() for m in (original, pruned))
    timed = side_by_side(timer, first, [second], x, rounds=rounds)
    original_s, pruned_s = timed.median_round(0)
    return {"original_s": original_s, "pruned_s": pruned_s, "speedup": original_s / pruned_s,
            "runtime": timer.runtime, "device": timer.device, "threads": timer.threads, "batch": batch,
            "clock": getattr(timer, "clock", "wall")}
