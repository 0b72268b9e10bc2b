"""Export a model to TorchScript or ONNX, checking that the export computes the same outputs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from adc.analysis.counting import mha_fastpath_disabled
from adc.analysis.onnx_program import onnx_program
from adc.pruning.serialization import load, read_header
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write
from adc.utils.formatting import one_line

FORMATS = ("onnx", "torchscript")


def export(model: nn.Module, example_input: torch.Tensor, path: str | Path, *, format: str = "onnx") -> Path:
    """Write ``model`` as ONNX or TorchScript (atomically).

    ONNX goes through PyTorch's ``torch.export``-based exporter
    (:func:`adc.analysis.onnx_program.onnx_program`), with a free batch axis;
    :func:`export_saved` checks the file under onnxruntime.

    Args:
        model: The (pruned) model.
        example_input: An input batch of the right shape; the batch axis is dynamic in ONNX.
        path: Destination file.
        format: ``"onnx"`` or ``"torchscript"``.
    """
    return export_with(model, example_input, path, format=format)[0]


def export_with(model: nn.Module, example_input: torch.Tensor, path: str | Path, *,
                format: str = "onnx") -> tuple[Path, str]:
    """:func:`export`, and which exporter wrote the file (``dynamo``, ``torchscript`` or ``torch.jit.trace``)."""
    if format not in FORMATS:
        raise AdcError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    if format == "onnx":
        program = onnx_program(model, example_input)
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(program.data)), program.exporter
    # Export in eval mode (batch norms use running statistics), then give the caller's model its mode back.
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mha_fastpath_disabled(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation: TorchScript is asked for
            traced = torch.jit.trace(model, example_input)
            return atomic_write(path, lambda tmp: torch.jit.save(traced, tmp)), "torch.jit.trace"
    except Exception as exc:  # the tracer raises anything on operators it lacks
        raise AdcError(f"cannot export {type(model).__name__} to {format}: {one_line(exc)}") from exc
    finally:
        model.train(was_training)


def onnx_outputs(path: str | Path, inputs: torch.Tensor) -> np.ndarray:
    """Run an exported ONNX file with onnxruntime on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise AdcError("onnxruntime is not installed; install adc with the 'onnx' extra: pip install 'adc[onnx]'") from exc
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]


class Exported(NamedTuple):
    """What :func:`export_saved` wrote and checked."""

    path: Path
    max_diff: float
    exporter: str
    batches: tuple[int, ...]


CHECK_BATCHES = (1, 3)
"""Batch sizes an ONNX export is run at against PyTorch: the example's, and another (the batch axis is free)."""


def export_saved(
    path: str | Path,
    *,
    format: str = "onnx",
    output: str | Path | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Exported:
    """Export a model saved by :func:`adc.save` (or a search's folder) and check it.

    The export is run on random inputs (onnxruntime for ONNX, at batch 1 and 3) and compared with PyTorch's output.

    Args:
        path: A model file, or a search output folder holding ``model.pt``.
        format: ``"onnx"`` or ``"torchscript"``.
        output: Destination; default ``model.onnx`` / ``model.ts`` beside the model.
        input_shape: (C, H, W) when the file does not record its input shape.

    Returns:
        The written path, the largest absolute output difference, the exporter and the batches checked.
    """
    if format not in FORMATS:
        raise AdcError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    path = Path(path)
    model_file = path / "model.pt" if path.is_dir() else path
    shape = saved_input_shape(model_file, input_shape)
    model = load(model_file).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, *shape[1:], generator=gen)
    dest = Path(output) if output is not None else model_file.with_suffix(".onnx" if format == "onnx" else ".ts")
    dest, exporter = export_with(model, x, dest, format=format)
    batches = CHECK_BATCHES if format == "onnx" else (1,)
    diff = 0.0
    for batch in batches:
        xb = torch.randn(batch, *shape[1:], generator=gen)
        with torch.no_grad():
            expected = model(xb).numpy()
        got = onnx_outputs(dest, xb) if format == "onnx" else _torchscript_outputs(dest, xb)
        if got.shape != expected.shape:
            raise AdcError(f"the export {str(dest)!r} gives outputs of shape {got.shape} at batch {batch}, "
                           f"PyTorch {expected.shape}")
        diff = max(diff, float(np.abs(got - expected).max()))
    return Exported(dest, diff, exporter, batches)


def saved_input_shape(model_file: Path, input_shape: tuple[int, ...] | None = None) -> list[int]:
    """The input shape (batch first) a model file written by adc records, or ``input_shape`` (C, H, W) when given.

    Raises:
        AdcError: when neither says it.
    """
    header, _ = read_header(model_file)
    if input_shape is not None:
        return [1, *input_shape]
    if header.get("pruning"):
        return list(header["pruning"]["example_shape"])
    if header.get("meta", {}).get("example_shape"):
        return list(header["meta"]["example_shape"])
    raise AdcError(f"{str(model_file)!r} does not record its input shape; pass --input-shape C,H,W")


def _torchscript_outputs(path: Path, inputs: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))(inputs).detach().numpy()
