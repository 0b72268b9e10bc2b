"""Measured CPU latency of a model with PyTorch and onnxruntime, and the pruned-over-unpruned speedup.

Each measurement: ``warmup`` untimed runs, then ``repeats`` timed runs; the
median is reported (robust to the other processes of a shared machine). The
unpruned and the pruned model are measured alternately in the same process,
with the same thread count, so that a speedup compares like with like.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from adc.pruning.export import export

BATCHES = (1, 64)


def _median_seconds(fn: Callable[[], object], *, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _repeats(batch: int) -> tuple[int, int]:
    """(warm-up, timed) runs: more for batch 1, whose runs are short and noisy."""
    return (10, 50) if batch == 1 else (3, 15)


def torch_latency(model: nn.Module, example: torch.Tensor, batch: int) -> float:
    """Median seconds of one forward pass of ``batch`` images with PyTorch (eval, inference mode, channels_last)."""
    model = model.eval()
    x = torch.randn(batch, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    warmup, repeats = _repeats(batch)
    with torch.inference_mode():
        return _median_seconds(lambda: model(x), warmup=warmup, repeats=repeats)


def ort_session(model: nn.Module, example: torch.Tensor, folder: Path, name: str, threads: int):
    """Export ``model`` to ONNX in ``folder`` and open an onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    path = export(model, example, folder / f"{name}.onnx", format="onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def ort_latency(session, example: torch.Tensor, batch: int) -> float:
    """Median seconds of one onnxruntime run of ``batch`` images."""
    x = torch.randn(batch, *example.shape[1:], generator=torch.Generator().manual_seed(0)).numpy()
    feed = {session.get_inputs()[0].name: x}
    warmup, repeats = _repeats(batch)
    return _median_seconds(lambda: session.run(None, feed), warmup=warmup, repeats=repeats)


def measure(unpruned: nn.Module, pruned: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Latencies (ms) of both models and speedups (unpruned / pruned) for PyTorch and onnxruntime at each batch size.

    Keys: ``{runtime}_b{batch}_ms_unpruned``, ``..._ms_pruned`` and
    ``{runtime}_b{batch}_speedup`` for runtime ``torch`` and ``ort``; plus
    ``threads``. onnxruntime entries are missing if it is not installed.
    """
    threads = torch.get_num_threads()
    out: dict[str, float] = {"threads": threads}
    models = {"unpruned": unpruned.eval(), "pruned": pruned.eval()}
    for batch in BATCHES:
        t = {k: torch_latency(m, example, batch) for k, m in models.items()}
        out[f"torch_b{batch}_ms_unpruned"] = 1e3 * t["unpruned"]
        out[f"torch_b{batch}_ms_pruned"] = 1e3 * t["pruned"]
        out[f"torch_b{batch}_speedup"] = t["unpruned"] / t["pruned"]
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {k: ort_session(m, example, Path(tmp), k, threads) for k, m in models.items()}
        for batch in BATCHES:
            t = {k: ort_latency(s, example, batch) for k, s in sessions.items()}
            out[f"ort_b{batch}_ms_unpruned"] = 1e3 * t["unpruned"]
            out[f"ort_b{batch}_ms_pruned"] = 1e3 * t["pruned"]
            out[f"ort_b{batch}_speedup"] = t["unpruned"] / t["pruned"]
    return out
