"""``adc export --quantize``: a saved model written as int8 QDQ ONNX, with its accuracy, size and speed measured.

The quantized file is calibrated on training images of the run's data and
checked under onnxruntime, where it will run: its test top-1, its size on
disk and its latency (batch 1, side by side with the fp32 export) are what is
reported and saved beside it (``<name>.json``), never a simulation's figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from adc.analysis.qdq import QdqBuilder
from adc.analysis.timers import SPEEDUP_TIMING, OnnxTimer, side_by_side
from adc.inputs.calibration import fixed_images
from adc.inputs.data import load_data
from adc.pruning.export import saved_input_shape
from adc.pruning.quantize import choose_precisions, onnx_accuracy
from adc.pruning.serialization import load
from adc.run.folder import RunFolder
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write, atomic_write_text

QUANTIZE = ("int8", "auto")
"""``int8``: every convolution and linear layer in int8; ``auto``: int8 where it makes the model faster, as measured."""


def quantize_saved(model_file: Path, *, mode: str = "auto", data: str | None = None, output: Path | None = None,
                   input_shape: tuple[int, ...] | None = None, calibration_images: int = 256, threads: int = 1,
                   run_folder: Path | None = None) -> dict[str, Any]:
    """Quantize a model file written by adc and measure the result under onnxruntime.

    Args:
        model_file: The model (``model.pt`` or ``model_finetuned.pt`` of a run, or any file ``adc.save`` wrote).
        mode: ``int8`` or ``auto`` (:data:`QUANTIZE`).
        data: Data spec for calibration and accuracy (default: the run folder's).
        output: Destination (default ``<model>.int8.onnx`` beside the model).
        input_shape: (C, H, W) when the file does not record it.
        calibration_images: Training images the activations are calibrated on.
        threads: onnxruntime threads of the timings.
        run_folder: The run folder the model belongs to, whose settings name the data.

    Returns:
        The summary also written to ``<output stem>.json``.

    Raises:
        AdcError: a bad mode, no data known, or a model that cannot be exported.
    """
    if mode not in QUANTIZE:
        raise AdcError(f"--quantize {mode!r}: valid: {', '.join(QUANTIZE)}")
    if calibration_images < 1:
        raise AdcError(f"--calibration-images {calibration_images}: must be a positive integer")
    if data is None and run_folder is not None:
        data = RunFolder(run_folder).settings().get("data")
    if not data:
        raise AdcError(f"quantizing {str(model_file)!r} needs its data (calibration and accuracy); pass --data SPEC")
    shape = saved_input_shape(model_file, input_shape)
    splits = load_data(data)
    model = load(model_file).eval()
    x = torch.randn(1, *shape[1:], generator=torch.Generator().manual_seed(0))
    images = fixed_images(splits.train, calibration_images, seed=0)
    builder = QdqBuilder(model, x, images)
    if mode == "int8":
        int8 = builder.program()
        timed = side_by_side(OnnxTimer("cpu", threads, **SPEEDUP_TIMING), builder.fp32, [int8.data], x, rounds=3)
        program, fp32_s, int8_s, savings = int8, timed.reference_s, timed.candidate_s[0], {}
    else:
        choice = choose_precisions(model, x, images, threads=threads, builder=builder)
        program, fp32_s, int8_s, savings = choice.program, choice.fp32_s, choice.chosen_s, choice.savings
    dest = Path(output) if output is not None else model_file.with_suffix(".int8.onnx")
    atomic_write(dest, lambda tmp: Path(tmp).write_bytes(program.data))
    fp32_acc = onnx_accuracy(builder.fp32, splits.test)
    int8_acc = onnx_accuracy(program.data, splits.test)
    summary = {
        "model": str(model_file), "output": str(dest), "mode": mode, "data": data,
        "format": "ONNX QDQ, static int8, per-channel weights, min-max calibration",
        "calibration_images": len(images), "int8_layers": list(program.int8_layers),
        "fp32_layers": list(program.fp32_layers),
        "test_top1_fp32": fp32_acc["top1"], "test_top1_int8": int8_acc["top1"], "test_images": int8_acc["samples"],
        "size_bytes_fp32": len(builder.fp32), "size_bytes_int8": len(program.data),
        "latency_s_fp32": fp32_s, "latency_s_int8": int8_s, "latency_batch": 1, "threads": threads,
        "layer_savings_s": savings,
    }
    atomic_write_text(dest.with_suffix(".json"), json.dumps(summary, indent=2))
    return summary
