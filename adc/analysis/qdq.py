"""Static int8 QDQ quantization of a model's ONNX graph on onnxruntime, with chosen layers left in fp32.

The model goes through adc's ONNX exporter (:func:`adc.analysis.onnx_program.onnx_program`),
onnxruntime's pre-processing (shape inference, graph optimisation) and
:func:`onnxruntime.quantization.quantize_static` in the QDQ format: int8
weights per output channel, int8 activations calibrated (min-max) on images.
A layer listed in ``fp32_layers`` is left out (no Q/DQ pair around it), so a
layer that int8 makes slower -- small convolutions often are -- stays fp32.
:class:`QdqBuilder` exports and pre-processes a model once and quantizes it
with any set of fp32 layers, so the measured per-layer choice
(:func:`adc.pruning.quantize.choose_precisions`) costs one quantization per
layer, not one export.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from adc.analysis.onnx_program import onnx_program
from adc.utils.errors import AdcError

PRECISIONS = ("fp32", "int8")
"""The precisions a layer can run at on onnxruntime (CPU)."""


class QdqProgram(NamedTuple):
    """A quantized ONNX graph: its bytes, and the layers in int8 and in fp32 (execution order)."""

    data: bytes
    int8_layers: tuple[str, ...]
    fp32_layers: tuple[str, ...]


def _ort_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError:
        raise AdcError("int8 quantization needs onnxruntime: pip install 'adc[onnx]'") from None
    return quantization


def weight_layers(model: nn.Module) -> list[str]:
    """The names of the convolution and linear layers of ``model``, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def executed_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The convolution and linear layers in the order a forward pass runs them (each once)."""
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, name=name: order.append(name))
               for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    seen: list[str] = []
    for name in order:
        if name not in seen:
            seen.append(name)
    return seen


def layer_nodes(model: nn.Module, x: torch.Tensor, graph: Any) -> dict[str, str]:
    """torch layer name -> the name of the ONNX node computing it, matched in execution order.

    The exporter folds batch norms into convolutions and names nodes after
    what it folded, so layers are matched by position: the k-th convolution
    or linear layer run is the k-th weight-carrying node (Conv, Gemm, or a
    MatMul with a constant weight) of the graph.

    Raises:
        AdcError: when the counts differ (a model whose ONNX graph does not
            map one node to each layer cannot have per-layer precisions).
    """
    constants = {i.name for i in graph.initializer}
    nodes = [n for n in graph.node if n.op_type in ("Conv", "Gemm")
             or (n.op_type == "MatMul" and any(i in constants for i in n.input))]
    layers = executed_layers(model, x)
    if len(nodes) != len(layers):
        raise AdcError(f"cannot give layers their own precision: the ONNX graph has {len(nodes)} weight nodes for "
                       f"{len(layers)} convolution and linear layers; quantize the whole model (no fp32 layers)")
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    modules = dict(model.named_modules())
    for layer, node in zip(layers, nodes):  # a node matched by position must hold that layer's weight
        want = tuple(modules[layer].weight.shape)
        got = [shapes[i] for i in node.input if i in shapes and len(shapes[i]) == len(want)]
        if not any(g == want or g == want[::-1] for g in got):
            raise AdcError(f"cannot give layers their own precision: layer {layer!r} (weight {list(want)}) does not "
                           f"match ONNX node {node.name!r}; quantize the whole model (no fp32 layers)")
    return {layer: node.name for layer, node in zip(layers, nodes)}


class _Reader:
    """onnxruntime's calibration data reader over a tensor of images, a batch at a time."""

    def __init__(self, input_name: str, images: torch.Tensor, batch: int = 32) -> None:
        self._batches = iter([{input_name: images[i:i + batch].numpy()} for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


class QdqBuilder:
    """Quantizes one model many ways: exported and pre-processed once, then each set of fp32 layers in turn.

    Args:
        model: The model (moved to the CPU, eval mode).
        example_input: An input batch of the right shape (the batch axis stays free).
        calibration: Images (N, C, H, W) the activations' ranges are calibrated on.

    Raises:
        AdcError: no calibration images, or onnxruntime missing.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, calibration: torch.Tensor) -> None:
        self._q = _ort_quantization()
        if calibration is None or len(calibration) == 0:
            raise AdcError("int8 quantization needs calibration images (training images of the model's data)")
        import onnx

        self.model = model.cpu().eval()
        self.example_input = example_input.cpu()
        self.calibration = calibration.cpu()
        self.fp32 = onnx_program(self.model, self.example_input).data
        self._folder = tempfile.TemporaryDirectory()
        raw = os.path.join(self._folder.name, "fp32.onnx")
        Path(raw).write_bytes(self.fp32)
        self._prepared = os.path.join(self._folder.name, "prepared.onnx")
        self._q.shape_inference.quant_pre_process(raw, self._prepared, skip_symbolic_shape=True)
        self._graph = onnx.load(self._prepared).graph
        self.layers = executed_layers(self.model, self.example_input)
        self._nodes: dict[str, str] | None = None

    def nodes(self) -> dict[str, str]:
        """Layer -> ONNX node (:func:`layer_nodes`); raises where the graph does not map one node to a layer."""
        if self._nodes is None:
            self._nodes = layer_nodes(self.model, self.example_input, self._graph)
        return self._nodes

    def program(self, fp32_layers: Iterable[str] = ()) -> QdqProgram:
        """The model in int8 but for ``fp32_layers`` (every layer listed: the fp32 graph itself)."""
        keep = list(dict.fromkeys(fp32_layers))
        known = weight_layers(self.model)
        unknown = [n for n in keep if n not in known]
        if unknown:
            raise AdcError(f"fp32 layer {unknown[0]!r} is not a convolution or linear layer of the model; valid: "
                           f"{', '.join(known[:8])}{', ...' if len(known) > 8 else ''}")
        if set(self.layers) <= set(keep):
            return QdqProgram(self.fp32, (), tuple(self.layers))
        names = self.nodes() if keep else {}
        q = self._q
        out = os.path.join(self._folder.name, "int8.onnx")
        q.quantize_static(self._prepared, out, _Reader(self._graph.input[0].name, self.calibration),
                          quant_format=q.QuantFormat.QDQ, per_channel=True, activation_type=q.QuantType.QInt8,
                          weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax,
                          nodes_to_exclude=[names[n] for n in keep if n in names])
        data = Path(out).read_bytes()
        return QdqProgram(data, tuple(n for n in self.layers if n not in keep),
                          tuple(n for n in self.layers if n in keep))


def qdq_program(model: nn.Module, example_input: torch.Tensor, calibration: torch.Tensor, *,
                fp32_layers: Iterable[str] = ()) -> QdqProgram:
    """``model`` statically quantized to int8 QDQ ONNX, ``fp32_layers`` left in fp32 (:class:`QdqBuilder`, once)."""
    return QdqBuilder(model, example_input, calibration).program(fp32_layers)
