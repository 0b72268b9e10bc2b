"""Every torchvision classification model is pruned correctly by adc, or refused in one line.

"Correctly" (``torchvision_cases.check_model``): analysis leaves out, with a
reason, every channel group it cannot really prune; a random policy prunes the
rest; the pruned model runs, every layer has the channels the analysis
predicted and ``FlopCounterMode`` counts exactly the analytic FLOPs and
parameters; ``adc.save`` writes it without being told the architecture and
``adc.load`` in a fresh process gives the same outputs; ONNX export matches
torch under onnxruntime. Inputs are small (64x64, or the smallest a model
takes). One model per family runs by default; the rest are marked slow
(``pytest -m slow``; ``benchmarks/torchvision_models.py`` runs them all with
timings). Models Torch-Pruning gets wrong in a known way are checked by name:
the channel-slicing model and others in ``odd_models.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import adc
from adc.analysis.cost import cost, count
from adc.analysis.graph import analyze
from adc.cli import app
from adc.inputs.models import torchvision_specs
from adc.pruning.pruner import ChannelPruner, check_pruned, prune
from adc.pruning.serialization import read_header, save
from adc.utils.errors import AdcError
from odd_models import Flipped, FixedWidth, Slicing
from torchvision_cases import ALL_MODELS, REFUSED, build, check_model, example, load_in_fresh_process

FAST = {
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "inception_v3", "mobilenet_v2", "resnet18",
    "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t", "vit_b_32",
}  # fmt: skip
"""One model per structure adc must follow: a plain stack with adaptive pooling (AlexNet), residual adds
(ResNet), grouped convolutions (ResNeXt; RegNet-X has the same), squeeze-excitation with depthwise
convolutions (EfficientNet; MobileNet-V3, MNASNet and RegNet-Y the same), inverted residuals (MobileNet-V2),
dense concatenation (DenseNet), multi-branch concatenation (Inception; GoogLeNet the same), channel shuffle
(ShuffleNet), fire modules (SqueezeNet), layer norm with 7x7 depthwise convolutions (ConvNeXt),
MultiheadAttention (ViT) and shifted-window attention (Swin; Swin-V2 the same). The rest are slow
(``pytest -m slow``, and ``benchmarks/torchvision_models.py``)."""
ODD = str(Path(__file__).with_name("odd_models.py"))


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(excinfo.value), f"AdcError spans lines: {excinfo.value!r}"
    return str(excinfo.value)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A folder for the models the tests below save, and what they saved (for the fresh-process load)."""
    return tmp_path_factory.mktemp("torchvision"), {}


def test_fast_set_names_real_models() -> None:
    assert FAST <= set(ALL_MODELS) and set(REFUSED) <= set(ALL_MODELS)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in ALL_MODELS])
def test_model_is_pruned_correctly_or_refused(name: str, saved: tuple[Path, dict[str, Path]]) -> None:
    folder, files = saved
    checked = check_model(name, folder)
    if name in REFUSED:
        assert checked.refused is not None and re.search(REFUSED[name], checked.refused), checked.refused
        return
    assert checked.refused is None, f"{name} refused: {checked.refused}"
    assert checked.units > 0
    files[name] = checked.saved


def test_saved_models_load_in_a_fresh_process(saved: tuple[Path, dict[str, Path]]) -> None:
    """Runs after the model tests (file order): one new interpreter loads every file they saved."""
    _, files = saved
    if not files:
        pytest.skip("no model test saved a file in this session (run the whole file)")
    report = load_in_fresh_process(list(files.values()))
    wrong = {path: diff for path, diff in report.items() if not (isinstance(diff, float) and diff <= 1e-6)}
    assert not wrong, wrong


def test_transformers_keep_their_mlp_units_and_leave_out_their_width() -> None:
    """ViT: the hidden width feeds a reshape to a fixed size, so it is excluded; every MLP hidden width prunes."""
    model, x = _vit()
    graph = analyze(model, x)
    assert sorted(u.name for u in graph.units) == sorted(f"encoder.layers.encoder_layer_{i}.mlp.0" for i in range(12))
    assert [name for name, _ in graph.excluded] == ["conv_proj"]
    assert "fails on its example input" in graph.excluded[0][1]


def _vit() -> tuple[torch.nn.Module, torch.Tensor]:
    return build("vit_b_32"), example("vit_b_32")


# ---------------------------------------------------------------- models Torch-Pruning gets wrong


def test_channel_slicing_model_leaves_the_sliced_unit_out() -> None:
    model, x = Slicing().eval(), torch.randn(1, 3, 16, 16)
    graph = analyze(model, x)
    assert [name for name, _ in graph.excluded] == ["stem"] and "sliced" in graph.excluded[0][1]
    assert "stem" not in {u.name for u in graph.units}
    assert cost(graph, {}) == count(model, x)  # what adc reports is what the model has
    with pytest.raises(AdcError) as excinfo:
        prune(model, x, {"stem": 0.5})
    assert "'stem'" in _one_line(excinfo) and "not prunable" in str(excinfo.value)


def test_a_unit_that_breaks_the_forward_pass_is_left_out_and_check_pruned_names_it() -> None:
    model, x = FixedWidth().eval(), torch.randn(1, 3, 8, 8)
    graph = analyze(model, x)
    assert [u.name for u in graph.units] == ["conv1"]
    assert graph.excluded == [("conv2", graph.excluded[0][1])] and "fails on its example input" in graph.excluded[0][1]
    unverified = analyze(model, x, verify=False)  # what adc did before: conv2 listed as prunable
    pruned = ChannelPruner(model, x, graph=unverified).prune({"conv2": 0.5})
    with pytest.raises(AdcError) as excinfo:
        check_pruned(pruned, unverified, [16, 8], x)
    assert "conv2" in _one_line(excinfo)


def test_a_unit_whose_channels_are_permuted_is_left_out() -> None:
    """The pruned copy runs and has the predicted cost, but its kept channels are not the original's."""
    model, x = Flipped().eval(), torch.randn(1, 3, 8, 8)
    graph = analyze(model, x)
    assert [u.name for u in graph.units] == ["conv2"]
    assert [name for name, _ in graph.excluded] == ["conv1"] and "something else" in graph.excluded[0][1]


def test_analysis_that_runs_out_of_memory_refuses_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial copy that does not fit says so, instead of excluding units for a reason that is not theirs."""
    import adc.analysis.verify

    def no_memory(*args: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(adc.analysis.verify, "_trial", no_memory)
    with pytest.raises(AdcError) as excinfo:
        analyze(FixedWidth().eval(), torch.randn(1, 3, 8, 8))
    assert "not enough memory to analyse FixedWidth" in _one_line(excinfo)


def test_profile_lists_the_excluded_units_with_their_reasons() -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["profile", "--model", f"{ODD}:slicing", "--input-shape", "3,16,16"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 prunable units" in result.output
    assert re.search(r"not a prunable unit: stem: only some of its 16 channels", result.output), result.output


def test_search_refuses_a_model_without_prunable_units_naming_why() -> None:
    model, x = Slicing().eval(), torch.randn(1, 3, 16, 16)
    with pytest.raises(AdcError) as excinfo:
        adc.search(model, x, evaluate=lambda m: 0.5, budget={"flops": 0.5}, bn_calibration=0, reconstruct=False,
                   episodes=2)
    assert "no prunable unit: stem: only some" in _one_line(excinfo)


# ---------------------------------------------------------------- saving without a spec


@pytest.mark.parametrize("module", ["resnet", "vision_transformer", "googlenet"])
def test_torchvision_spec_is_inferred_for_every_builder_of_a_module(module: str) -> None:
    """Built on the meta device (no memory): the first candidate is the builder that made the model."""
    import torchvision

    names = [n for n in ALL_MODELS if torchvision.models.get_model_builder(n).__module__ == f"torchvision.models.{module}"]
    options = {"vision_transformer": {"image_size": 224}, "googlenet": {"aux_logits": False, "transform_input": True}}
    for name in names:
        with torch.device("meta"):
            model = torchvision.models.get_model(name, weights=None, num_classes=7, **options.get(module, {}))
        spec = torchvision_specs(model)[0]
        assert spec == {"spec": f"torchvision:{name}", "num_classes": 7, "in_channels": 3,
                        **({"options": options[module]} if module in options else {})}


def test_save_refuses_a_model_it_cannot_rebuild(tmp_path: Path) -> None:
    with pytest.raises(AdcError) as excinfo:
        save(Slicing(), tmp_path / "m.pt")
    assert "Slicing" in _one_line(excinfo) and "spec=" in str(excinfo.value)
    assert not (tmp_path / "m.pt").exists()


def test_saved_vit_records_its_image_size(saved: tuple[Path, dict[str, Path]]) -> None:
    _, files = saved
    if "vit_b_32" not in files:
        pytest.skip("vit_b_32's model test did not run")
    header, _ = read_header(files["vit_b_32"])
    assert header["model"] == {"spec": "torchvision:vit_b_32", "num_classes": 10, "in_channels": 3,
                               "options": {"image_size": 64}}
