"""int8 export for onnxruntime: a (pruned) model written as static QDQ ONNX, and its accuracy measured there.

The quantization itself is :func:`adc.analysis.qdq.qdq_program`. Every figure
adc reports about a quantized model (accuracy, size, latency) is measured on
the written ONNX file under onnxruntime, never on a simulation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from adc.analysis.qdq import QdqBuilder, QdqProgram, qdq_program
from adc.analysis.timers import SPEEDUP_TIMING, OnnxTimer, side_by_side
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write


class Quantized(NamedTuple):
    """A quantized ONNX model as written.

    Attributes:
        path: The QDQ ONNX file.
        int8_layers: The model's convolution and linear layers that run in int8.
        fp32_layers: Those left in fp32.
        size_bytes: The file's size.
        calibration_images: How many training images calibrated the activations.
    """

    path: Path
    int8_layers: tuple[str, ...]
    fp32_layers: tuple[str, ...]
    size_bytes: int
    calibration_images: int


def quantize(model: nn.Module, example_input: torch.Tensor, calibration: torch.Tensor, path: str | Path, *,
             fp32_layers: Iterable[str] = ()) -> Quantized:
    """Write ``model`` as a statically quantized QDQ ONNX file (atomically), ``fp32_layers`` left in fp32.

    Arguments as :func:`adc.analysis.qdq.qdq_program`'s, and ``path`` the destination.
    """
    program = qdq_program(model, example_input, calibration, fp32_layers=fp32_layers)
    dest = atomic_write(path, lambda tmp: Path(tmp).write_bytes(program.data))
    return Quantized(dest, program.int8_layers, program.fp32_layers, len(program.data), len(calibration))


def onnx_session(source: str | Path | bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU session of an ONNX file (or its bytes), ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    data = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def onnx_accuracy(source: str | Path | bytes, dataset: Sequence[Any], *, batch: int = 256) -> dict[str, float]:
    """Top-1 and mean cross-entropy of an ONNX classifier on ``dataset`` of (image, label), under onnxruntime."""
    session = onnx_session(source)
    name = session.get_inputs()[0].name
    correct, loss, seen = 0, 0.0, 0
    for start in range(0, len(dataset), batch):
        pairs = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        images = torch.stack([p[0] for p in pairs]).numpy()
        labels = np.asarray([int(p[1]) for p in pairs])
        logits = session.run(None, {name: images})[0]
        correct += int((logits.argmax(1) == labels).sum())
        shifted = logits - logits.max(1, keepdims=True)
        loss += float(-(shifted[np.arange(len(labels)), labels] - np.log(np.exp(shifted).sum(1))).sum())
        seen += len(labels)
    if seen == 0:
        raise AdcError("onnx accuracy: the data set is empty")
    return {"top1": correct / seen, "loss": loss / seen, "samples": seen}


@dataclass
class PrecisionChoice:
    """Which layers run in int8, chosen by timing the model on onnxruntime, and what was measured.

    Attributes:
        program: The chosen graph (the fp32 graph itself when int8 made nothing faster).
        fp32_s / int8_s / chosen_s: Seconds of one batch of the fp32 graph, the all-int8 graph and the chosen one,
            timed side by side (median of the rounds).
        savings: Per layer, seconds its int8 saves inside the all-int8 graph (the graph with that layer alone in
            fp32, minus the all-int8 one): negative where int8 makes the layer slower.
        note: Why the choice is coarser than per layer, when it is.
    """

    program: QdqProgram
    fp32_s: float
    int8_s: float
    chosen_s: float
    savings: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def precisions(self) -> dict[str, str]:
        return {**{n: "int8" for n in self.program.int8_layers}, **{n: "fp32" for n in self.program.fp32_layers}}


def choose_precisions(model: nn.Module, example_input: torch.Tensor, calibration: torch.Tensor, *,
                      threads: int = 1, rounds: int = 3, margin: float = 0.02,
                      builder: QdqBuilder | None = None) -> PrecisionChoice:
    """Keep in fp32 every layer whose int8 makes the model slower on onnxruntime; never slower than fp32.

    Each layer is timed in context: the all-int8 graph against the same graph
    with that layer alone in fp32, side by side
    (:func:`adc.analysis.timers.side_by_side`). A layer goes back to fp32
    when that makes the graph more than ``margin`` faster. The result is then
    timed against the fp32 graph and the all-int8 one, and the fastest of the
    three is kept -- so the choice is never slower than fp32 as measured.

    Args:
        model: The (pruned) model.
        example_input: One input batch (its batch size is the one timed).
        calibration: Training images for the activations' ranges.
        threads: onnxruntime intra-op threads of the timings.
        rounds: Side-by-side rounds of each comparison.
        margin: The relative gain a layer's fp32 must bring to be kept.
        builder: A ready :class:`QdqBuilder` of the same model.
    """
    builder = builder or QdqBuilder(model, example_input, calibration)
    timer = OnnxTimer("cpu", threads, **SPEEDUP_TIMING)
    x = example_input.cpu()
    int8 = builder.program()
    savings: dict[str, float] = {}
    note = ""
    keep: list[str] = []
    try:
        singles = [builder.program([name]) for name in builder.layers]
    except AdcError as exc:  # no node per layer: the whole model in one precision
        singles, note = [], str(exc)
    if singles:
        timed = side_by_side(timer, int8.data, [p.data for p in singles], x, rounds=rounds)
        for name, ratio in zip(builder.layers, timed.ratios):
            savings[name] = timed.reference_s * (ratio - 1.0)
            if ratio < 1.0 - margin:
                keep.append(name)
    chosen = builder.program(keep) if keep else int8
    final = side_by_side(timer, builder.fp32, [int8.data, chosen.data], x, rounds=rounds)
    fp32_s, (int8_s, chosen_s) = final.reference_s, final.candidate_s
    options = [(fp32_s, QdqProgram(builder.fp32, (), tuple(builder.layers))), (int8_s, int8), (chosen_s, chosen)]
    best_s, best = min(options, key=lambda o: o[0])
    return PrecisionChoice(best, fp32_s, int8_s, best_s, savings, note)
