"""Export a model to TorchScript or ONNX, checking that the export computes the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from adc.pruning.serialization import load, read_header
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write
from adc.utils.formatting import one_line

FORMATS = ("onnx", "torchscript")


def export(model: nn.Module, example_input: torch.Tensor, path: str | Path, *, format: str = "onnx") -> Path:
    """Write ``model`` as ONNX or TorchScript (atomically).

    Args:
        model: The (pruned) model.
        example_input: An input batch of the right shape; the batch axis is dynamic in ONNX.
        path: Destination file.
        format: ``"onnx"`` or ``"torchscript"``.
    """
    if format not in FORMATS:
        raise AdcError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    # Export in eval mode (batch norms use running statistics), then give the caller's model its mode back.
    # MultiheadAttention's eval fast path (one fused kernel, aten::_native_multi_head_attention) has no ONNX
    # or TorchScript form: export the same computation through its unfused path.
    was_training, fastpath = model.training, torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        if format == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, example_input)
            return atomic_write(path, lambda tmp: torch.jit.save(traced, tmp))

        def write_onnx(tmp: str) -> None:
            # dynamo=False: the TorchScript-based exporter needs no onnxscript and handles every zoo and
            # torchvision model we test; torch 2.14 still provides it.
            with torch.no_grad():
                torch.onnx.export(
                    model, (example_input,), tmp, input_names=["input"], output_names=["output"],
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17, dynamo=False,
                )

        return atomic_write(path, write_onnx)
    except Exception as exc:  # the exporters raise anything on operators they lack
        raise AdcError(f"cannot export {type(model).__name__} to {format}: {one_line(exc)}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)


def onnx_outputs(path: str | Path, inputs: torch.Tensor) -> np.ndarray:
    """Run an exported ONNX file with onnxruntime on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise AdcError("onnxruntime is not installed; install adc with the 'onnx' extra: pip install 'adc[onnx]'") from exc
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]


def export_saved(
    path: str | Path,
    *,
    format: str = "onnx",
    output: str | Path | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> tuple[Path, float]:
    """Export a model saved by :func:`adc.save` (or a search's folder) and check it.

    The export is run on a random input and compared with PyTorch's output.

    Args:
        path: A model file, or a search output folder holding ``model.pt``.
        format: ``"onnx"`` or ``"torchscript"``.
        output: Destination; default ``model.onnx`` / ``model.ts`` beside the model.
        input_shape: (C, H, W) when the file does not record its input shape.

    Returns:
        The written path and the largest absolute output difference.
    """
    if format not in FORMATS:
        raise AdcError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    path = Path(path)
    model_file = path / "model.pt" if path.is_dir() else path
    header, _ = read_header(model_file)
    shape = None
    if input_shape is not None:
        shape = [1, *input_shape]
    elif header.get("pruning"):
        shape = header["pruning"]["example_shape"]
    elif header.get("meta", {}).get("example_shape"):
        shape = header["meta"]["example_shape"]
    if shape is None:
        raise AdcError(f"{str(model_file)!r} does not record its input shape; pass --input-shape C,H,W")
    model = load(model_file)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    dest = Path(output) if output is not None else model_file.with_suffix(".onnx" if format == "onnx" else ".ts")
    export(model, x, dest, format=format)
    with torch.no_grad():
        expected = model(x).numpy()
    if format == "onnx":
        got = onnx_outputs(dest, x)
    else:
        got = torch.jit.load(str(dest))(x).detach().numpy()
    return dest, float(np.abs(got - expected).max())
