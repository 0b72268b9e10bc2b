"""A model as ONNX bytes, through PyTorch's ``torch.export``-based exporter (``dynamo=True``).

One function makes every ONNX graph adc writes or times, so the model
``adc export`` hands over and the one the ``onnxruntime`` latency figures
were measured on come from the same exporter. The TorchScript-based exporter
(``dynamo=False``) is deprecated since PyTorch 2.9; it is used only when
``torch.export`` cannot trace a model, and the caller is told which exporter
ran.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from adc.analysis.counting import mha_fastpath_disabled
from adc.utils.errors import AdcError
from adc.utils.formatting import one_line

OPSET = 18
"""The ONNX opset of every export (the lowest the dynamo exporter writes without a version conversion)."""


class OnnxProgram(NamedTuple):
    """An exported model: its serialized ONNX graph and the exporter that wrote it (``dynamo`` or ``torchscript``)."""

    data: bytes
    exporter: str


def _dynamo(model: nn.Module, x: torch.Tensor, dynamic_batch: bool) -> bytes:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError:
        raise AdcError("ONNX export needs onnxscript: pip install 'adc[onnx]'") from None
    shapes = None
    if dynamic_batch:
        # A batch of 1 would be specialised (torch.export treats sizes 0 and 1 as constants): trace with 2.
        x = x[:1].expand(2, *x.shape[1:]).contiguous()
        shapes = ({0: torch.export.Dim("batch")},)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["output"], dynamic_shapes=shapes,
                          opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
        return Path(path).read_bytes()


def _torchscript(model: nn.Module, x: torch.Tensor, dynamic_batch: bool) -> bytes:
    buf = io.BytesIO()
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(model, (x,), buf, input_names=["input"], output_names=["output"], dynamic_axes=axes,
                      opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def onnx_program(model: nn.Module, example_input: torch.Tensor, *, dynamic_batch: bool = True) -> OnnxProgram:
    """Export ``model`` in eval mode, without gradients, through MultiheadAttention's unfused path.

    Args:
        model: Any module (its train/eval mode is restored afterwards).
        example_input: An input of the right shape.
        dynamic_batch: Leave the batch axis free (``adc export``); False fixes the example's shape
            (a timing at one batch size).

    Raises:
        AdcError: when neither exporter can export the model (one line, the dynamo exporter's reason).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mha_fastpath_disabled(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' deprecation and tracer chatter
            try:
                return OnnxProgram(_dynamo(model, example_input, dynamic_batch), "dynamo")
            except AdcError:
                raise
            except Exception as exc:  # torch.export raises anything on code it cannot trace
                reason = one_line(exc)
                try:
                    return OnnxProgram(_torchscript(model, example_input, dynamic_batch), "torchscript")
                except Exception:
                    raise AdcError(f"cannot export {type(model).__name__} to ONNX: {reason}") from exc
    finally:
        model.train(was_training)
