"""int8 QDQ quantization on onnxruntime: what is written is what is reported, and fp32 layers stay fp32."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from adc.analysis.qdq import QdqBuilder, executed_layers, qdq_program
from adc.inputs.calibration import fixed_images
from adc.pruning.quantize import choose_precisions, onnx_accuracy, quantize
from adc.utils.errors import AdcError

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def builder(make_trained, digits) -> QdqBuilder:
    model = make_trained()
    return QdqBuilder(model, torch.zeros(1, 1, 8, 8), fixed_images(digits.train, 128, seed=0))


def _float_weights(data: bytes) -> set[str]:
    """Names of the float initializers feeding a Conv or Gemm directly (a layer left in fp32)."""
    graph = onnx.load_from_string(data).graph
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return {i for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul") for i in n.input[1:2] if i in floats}


def test_int8_keeps_accuracy_and_shrinks_the_file(builder, digits, tmp_path):
    written = quantize(builder.model, builder.example_input, builder.calibration, tmp_path / "m.onnx")
    assert written.path.stat().st_size == written.size_bytes < 0.5 * len(builder.fp32)
    assert set(written.int8_layers) == set(executed_layers(builder.model, builder.example_input))
    fp32, int8 = onnx_accuracy(builder.fp32, digits.test), onnx_accuracy(written.path, digits.test)
    assert int8["samples"] == len(digits.test) and int8["top1"] >= fp32["top1"] - 0.02
    assert not _float_weights(written.path.read_bytes())  # every layer's weight quantized


@pytest.mark.parametrize("index", [0, -1])
def test_a_layer_kept_in_fp32_has_float_weights_and_the_rest_do_not(builder, index):
    layer = builder.layers[index]
    program = builder.program([layer])
    assert program.fp32_layers == (layer,) and layer not in program.int8_layers
    assert len(_float_weights(program.data)) == 1
    assert builder.program(builder.layers).data == builder.fp32  # every layer fp32: the fp32 graph


def test_an_unknown_fp32_layer_names_the_valid_ones(builder):
    with pytest.raises(AdcError, match=r"'nope' is not a convolution or linear layer.*valid: features\.0\.0"):
        builder.program(["nope"])


def test_a_graph_without_a_node_per_layer_refuses_per_layer_precision():
    model = nn.Sequential(nn.Flatten(), nn.Unflatten(1, (4, 16)), nn.TransformerEncoderLayer(16, 2, 32, batch_first=True),
                          nn.Flatten(), nn.Linear(64, 10)).eval()
    x, images = torch.randn(1, 64), torch.randn(8, 64)
    assert qdq_program(model, x, images).int8_layers  # the whole model quantizes
    with pytest.raises(AdcError, match="cannot give layers their own precision") as info:
        qdq_program(model, x, images, fp32_layers=["4"])
    assert "\n" not in str(info.value)


def test_the_measured_choice_is_never_slower_than_fp32_or_all_int8(builder):
    choice = choose_precisions(builder.model, builder.example_input, builder.calibration, builder=builder, rounds=1)
    assert choice.chosen_s <= min(choice.fp32_s, choice.int8_s)
    assert set(choice.savings) == set(builder.layers) and set(choice.precisions) == set(builder.layers)
