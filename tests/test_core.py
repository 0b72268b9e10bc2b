"""Core library: units, analytic cost, criteria, pruning, reconstruction, save/load, export.

Models are built and traced once per module (cached builders below); inputs
are small (64x64 for torchvision, 32x32 and 8x8 for the zoo) so the file runs
in a couple of minutes on two busy cores.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from adc.analysis.cost import cost, cost_of_kept, count, kept_vector
from adc.pruning.criteria import CRITERIA, DATA_CRITERIA
from adc.utils.errors import AdcError
from adc.pruning.export import export, export_with, onnx_outputs
from adc.analysis.graph import ModelGraph, Unit, analyze, find_units
from adc.inputs.models import build_model
from adc.pruning.pruner import ChannelPruner, prune
from adc.pruning.serialization import load, read_header, save
from adc.inputs.zoo import ZOO

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "vgg11_bn", "efficientnet_b0", "densenet121", "regnet_y_400mf"]
TV_CLASSIFIER = {
    "resnet18": "fc", "resnet50": "fc", "mobilenet_v2": "classifier.1", "vgg11_bn": "classifier.6",
    "efficientnet_b0": "classifier.1", "densenet121": "classifier", "regnet_y_400mf": "fc",
}  # fmt: skip
ZOO_SHAPES = [(1, 3, 32, 32), (1, 1, 8, 8)]
ZOO_CASES = [(name, shape) for name in ZOO.names() for shape in ZOO_SHAPES]
# Every model the cost and unit checks run on: ("tv", name, shape) or ("zoo", name, shape).
ALL_CASES = [("tv", n, (1, 3, 64, 64)) for n in TORCHVISION] + [("zoo", n, s) for n, s in ZOO_CASES]
ALL_IDS = [f"{src}-{n}-{s[1]}x{s[2]}" for src, n, s in ALL_CASES]
# Relative error of the analytic cost vs FlopCounterMode, per case (see test_cost_matches_flop_counter).
WORST_ERROR: dict[str, tuple[float, float]] = {}


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Give batch norms non-trivial affine parameters and statistics, as a trained model has.

    Freshly built models have gamma = 1 everywhere, which makes ``bn_scale``
    a tie and hides bugs in channel bookkeeping (all channels look alike).
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


def _build(src: str, name: str, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if src == "tv":
        import torchvision

        model = torchvision.models.get_model(name, weights=None)
    else:
        model = ZOO.get(name)(num_classes=10, in_channels=shape[1])
    return _randomize_bn(model, seed).eval()


@functools.cache
def _case(src: str, name: str, shape: tuple[int, ...]) -> tuple[nn.Module, torch.Tensor, ModelGraph]:
    """(model, input, graph), built and traced once per test session."""
    model = _build(src, name, shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return model, x, analyze(model, x)


def _zoo(name: str, in_channels: int = 3) -> tuple[nn.Module, torch.Tensor, ModelGraph]:
    return _case("zoo", name, (1, in_channels, 32, 32) if in_channels == 3 else (1, in_channels, 8, 8))


def _calibration(n: int = 8, in_channels: int = 3, size: int = 32, seed: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, in_channels, size, size, generator=gen), torch.randint(0, 10, (n,), generator=gen))]


def _random_policies(graph: ModelGraph, n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{u.name: float(rng.uniform(0.0, 0.9)) for u in graph.units} for _ in range(n)]


def _out_modules(unit: Unit) -> set[str]:
    return {m.module for m in unit.members if m.dim == "out"}


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, f"AdcError message spans lines: {message!r}"
    return message


# ----------------------------------------------------------------------- units


@pytest.mark.parametrize(("src", "name", "shape"), ALL_CASES, ids=ALL_IDS)
def test_units_are_unique_stable_and_exclude_classifier(src: str, name: str, shape: tuple[int, ...]) -> None:
    model, x, graph = _case(src, name, shape)
    names = [u.name for u in graph.units]
    assert names, "no prunable unit found"
    assert len(set(names)) == len(names), "unit names are not unique"
    assert [u.index for u in graph.units] == list(range(len(names)))
    # Stable: a second build of the same architecture (other weights) gives the same units.
    again = find_units(_build(src, name, shape, seed=5), x)
    assert [u.name for u in again] == names
    assert [u.channels for u in again] == [u.channels for u in graph.units]

    expected_classifier = TV_CLASSIFIER[name] if src == "tv" else "fc"
    assert graph.classifier == expected_classifier
    modules = dict(model.named_modules())
    for u in graph.units:
        assert expected_classifier not in _out_modules(u), f"classifier outputs are pruned by unit {u.name}"
        assert u.name in modules and u.name in _out_modules(u)
        assert u.channels >= 2 and u.channels % u.channel_groups == 0
        assert u.kind in {"conv", "depthwise", "grouped", "linear"}
        for m in u.members:
            assert len(m.idxs) == len(m.root_idxs)
            assert len(m.root_idxs) == 0 or (m.root_idxs.min() >= 0 and m.root_idxs.max() < u.channels)


def test_resnet18_residual_partners_share_one_unit() -> None:
    _, _, graph = _case("tv", "resnet18", (1, 3, 64, 64))
    stem = graph.unit("conv1")
    # The stem's output is added to the output of every block of layer1: one unit.
    assert {"conv1", "bn1", "layer1.0.conv2", "layer1.0.bn2", "layer1.1.conv2"} <= _out_modules(stem)
    assert {"layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"} <= {
        m.module for m in stem.members if m.dim == "in"
    }
    for u in graph.units:
        if u is not stem:
            assert not ({"layer1.0.conv2", "layer1.1.conv2"} & _out_modules(u))
    # layer2's downsample shortcut and both blocks' second convs are one unit too.
    shortcut = next(u for u in graph.units if "layer2.0.downsample.0" in _out_modules(u))
    assert {"layer2.0.conv2", "layer2.1.conv2"} <= _out_modules(shortcut)
    assert len(graph) == 12  # stem + 3 shortcut groups + 8 inner block convs


def test_zoo_resnet_residual_partners_share_one_unit() -> None:
    _, _, graph = _zoo("resnet20")
    stem = graph.unit("features.0.0")
    assert {f"features.1.{i}.conv2" for i in range(3)} <= _out_modules(stem)
    assert len(graph) == 12


def test_depthwise_and_grouped_kinds() -> None:
    _, _, mnv2 = _case("tv", "mobilenet_v2", (1, 3, 64, 64))
    model = _case("tv", "mobilenet_v2", (1, 3, 64, 64))[0]
    modules = dict(model.named_modules())

    def has_depthwise(u: Unit) -> bool:
        return any(isinstance(modules[m.module], nn.Conv2d) and modules[m.module].groups > 1 for m in u.members)

    depthwise = [u for u in mnv2.units if has_depthwise(u)]
    assert len(depthwise) == 17
    assert all(u.kind == "depthwise" for u in depthwise)
    assert all(u.kind == "conv" for u in mnv2.units if not has_depthwise(u))

    _, _, regnet = _case("tv", "regnet_y_400mf", (1, 3, 64, 64))
    grouped = [u for u in regnet.units if u.kind == "grouped"]
    assert grouped and all(u.channel_groups > 1 for u in grouped)
    _, _, zoo_mobilenet = _zoo("mobilenet")
    assert sum(u.kind == "depthwise" for u in zoo_mobilenet.units) == 7


@settings(max_examples=200, deadline=None)
@given(
    channels=st.integers(2, 600),
    groups=st.sampled_from([1, 2, 4, 8]),
    sparsity=st.floats(0.0, 0.999),
    more=st.floats(0.0, 0.999),
    round_to=st.sampled_from([1, 2, 4, 8, 16]),
)
def test_unit_kept_is_bounded_rounded_and_monotone(channels: int, groups: int, sparsity: float, more: float,
                                                   round_to: int) -> None:
    channels = max(groups, channels - channels % groups)
    unit = Unit("u", 0, "conv", channels, groups, 3, channels, 3, 1, 1, 8, 8)
    kept = unit.kept(sparsity, round_to)
    assert 1 <= kept <= channels
    if groups > 1:
        assert kept % groups == 0  # same positions in every group
    else:
        assert kept == channels or kept % round_to == 0
    assert unit.kept(max(sparsity, more), round_to) <= unit.kept(min(sparsity, more), round_to)
    assert unit.kept(0.0, round_to) == channels


# ------------------------------------------------------------------------ cost


@pytest.mark.parametrize(("src", "name", "shape"), ALL_CASES, ids=ALL_IDS)
def test_cost_matches_flop_counter(src: str, name: str, shape: tuple[int, ...], record_property) -> None:
    model, x, graph = _case(src, name, shape)
    assert cost(graph, {}) == count(model, x)
    worst_flops = worst_params = 0.0
    for round_to in (1, 8):
        # The ranking does not change costs; "random" is the cheapest to compute.
        pruner = ChannelPruner(model, x, criterion="random", round_to=round_to, graph=graph)
        for policy in _random_policies(graph, 3, seed=round_to):
            analytic = cost(graph, policy, round_to)
            measured = count(pruner.prune(policy), x)
            worst_flops = max(worst_flops, abs(analytic.flops - measured.flops) / measured.flops)
            worst_params = max(worst_params, abs(analytic.params - measured.params) / measured.params)
    WORST_ERROR[f"{src}:{name}{shape}"] = (worst_flops, worst_params)
    record_property("worst_flops_rel_error", worst_flops)
    record_property("worst_params_rel_error", worst_params)
    assert worst_flops < 0.01 and worst_params < 0.01, (worst_flops, worst_params)


def test_cost_of_kept_is_fast_on_densenet121() -> None:
    _, _, graph = _case("tv", "densenet121", (1, 3, 64, 64))
    kept = kept_vector(graph, _random_policies(graph, 1, seed=0)[0])
    cost_of_kept(graph, kept)
    start = time.perf_counter()
    for _ in range(200):
        cost_of_kept(graph, kept)
    per_call = (time.perf_counter() - start) / 200
    # The search prices a policy at every step; measured ~15 us, the bound leaves room for a busy machine.
    assert per_call < 1e-3, f"cost_of_kept takes {per_call * 1e3:.2f} ms"


def test_unit_macs_and_params_are_within_totals() -> None:
    _, _, graph = _zoo("resnet20")
    total = cost(graph, {})
    for u in graph.units:
        assert 0 < u.macs <= total.macs and 0 < u.params <= total.params


# --------------------------------------------------------------------- pruning


@pytest.mark.parametrize("name", ZOO.names())
@pytest.mark.parametrize("round_to", [1, 8])
def test_prune_leaves_input_untouched_and_respects_round_to(name: str, round_to: int) -> None:
    model, x, graph = _zoo(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    policies = _random_policies(graph, 2, seed=7) + [{u.name: 0.999 for u in graph.units}]
    pruner = ChannelPruner(model, x, round_to=round_to, graph=graph)
    reference = model(x)
    for policy in policies:
        pruned = pruner.prune(policy)
        assert pruned(x).shape == reference.shape
        assert count(pruned, x).params < count(model, x).params
        modules = dict(pruned.named_modules())
        for u in graph.units:
            root = modules[u.name]
            kept = root.out_features if isinstance(root, nn.Linear) else root.out_channels
            assert kept == u.kept(policy[u.name], round_to) >= 1
            assert kept == u.channels or kept % round_to == 0 or u.channel_groups > 1
            if policy[u.name] == 0.999:  # below half a channel: one channel, or one multiple of round_to
                assert kept == min(u.channels, round_to) or (u.channel_groups > 1 and kept == u.channel_groups)
        assert pruned.adc_pruning["round_to"] == round_to
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not hasattr(model, "adc_pruning")
    assert torch.equal(model(x), reference)


def test_prune_function_and_empty_policy() -> None:
    model, x, graph = _zoo("vgg_small")
    unit = graph.units[1].name
    pruned = prune(model, x, {unit: 0.5})
    assert dict(pruned.named_modules())[unit].out_channels == graph.unit(unit).channels // 2
    same = prune(model, x, {})
    assert count(same, x) == count(model, x)
    assert torch.allclose(same(x), model(x))


def test_prune_grouped_and_depthwise_torchvision_models_run() -> None:
    for name in ("regnet_y_400mf", "mobilenet_v2"):
        model, x, graph = _case("tv", name, (1, 3, 64, 64))
        pruner = ChannelPruner(model, x, criterion="random", round_to=8, graph=graph)
        pruned = pruner.prune({u.name: 0.5 for u in graph.units})
        assert pruned(x).shape == (1, 1000)
        assert count(pruned, x) == cost(graph, {u.name: 0.5 for u in graph.units}, 8)


# -------------------------------------------------------------------- criteria


@pytest.mark.parametrize("criterion", CRITERIA.names())
@pytest.mark.parametrize("name", ["resnet20", "mobilenet"])
def test_every_criterion_prunes(criterion: str, name: str) -> None:
    model, x, graph = _zoo(name)
    pruner = ChannelPruner(model, x, criterion=criterion, calibration=_calibration(), graph=graph)
    policy = {u.name: 0.5 for u in graph.units}
    keep = pruner.keep_indices(policy)
    for u in graph.units:
        assert len(keep[u.name]) == u.kept(0.5) and np.all(np.diff(keep[u.name]) > 0)
    pruned = pruner.prune(policy)
    assert torch.isfinite(pruned(x)).all()
    assert count(pruned, x) == cost(graph, policy)


@pytest.mark.parametrize("criterion", sorted(DATA_CRITERIA))
def test_data_criteria_need_calibration(criterion: str) -> None:
    model, x, graph = _zoo("resnet20")
    with pytest.raises(AdcError) as excinfo:
        ChannelPruner(model, x, criterion=criterion, graph=graph)
    assert "calibration" in _one_line_error(excinfo)


def test_criteria_choose_different_channels() -> None:
    model, x, graph = _zoo("resnet20")
    calibration = _calibration()
    policy = {u.name: 0.5 for u in graph.units}
    keeps = {
        c: ChannelPruner(model, x, criterion=c, calibration=calibration, graph=graph).keep_indices(policy)
        for c in CRITERIA.names()
    }
    names = CRITERIA.names()
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert any(not np.array_equal(keeps[a][u], keeps[b][u]) for u in policy), f"{a} and {b} keep the same channels"


def test_l1_keeps_the_largest_filters_of_a_plain_layer() -> None:
    model, x, graph = _zoo("plain20")
    unit = graph.units[3]
    weight = dict(model.named_modules())[unit.name].weight.detach()
    keep = ChannelPruner(model, x, criterion="l1", graph=graph).keep_indices({unit.name: 0.5})[unit.name]
    norms = weight.abs().flatten(1).sum(1)
    # Scores also include the consumer's input columns; the kept set must at least beat a random one on its own filters.
    assert norms[keep].mean() > norms.mean()


def test_random_criterion_is_seeded() -> None:
    model, x, graph = _zoo("resnet20")
    policy = {u.name: 0.5 for u in graph.units}

    def keep(seed: int) -> dict[str, np.ndarray]:
        return ChannelPruner(model, x, criterion="random", seed=seed, graph=graph).keep_indices(policy)

    a, b, c = keep(3), keep(3), keep(4)
    assert all(np.array_equal(a[u], b[u]) for u in policy)
    assert any(not np.array_equal(a[u], c[u]) for u in policy)


# -------------------------------------------------------------- reconstruction


def _smooth_images(n: int, seed: int) -> torch.Tensor:
    """Images with spatial structure (upsampled noise), so channels are correlated as in real features."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, 8, 8, generator=gen)
    return nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", ["vgg_small", "plain20"])
def test_reconstruction_lowers_next_layer_error(name: str) -> None:
    model, x, graph = _zoo(name)
    unit = graph.units[2]
    consumer = next(m.module for m in unit.members if m.dim == "in")
    calibration = [(_smooth_images(96, seed=10), torch.zeros(96, dtype=torch.long))]
    held_out = _smooth_images(32, seed=11)

    def consumer_output(net: nn.Module) -> torch.Tensor:
        captured = []
        handle = dict(net.named_modules())[consumer].register_forward_hook(lambda m, i, o: captured.append(o))
        with torch.no_grad():
            net(held_out)
        handle.remove()
        return captured[0]

    target = consumer_output(model)
    errors = {}
    for reconstruct in (False, True):
        pruner = ChannelPruner(model, x, calibration=calibration, reconstruct=reconstruct, graph=graph)
        pruned = pruner.prune({unit.name: 0.5})
        errors[reconstruct] = (consumer_output(pruned) - target).pow(2).mean().item()
    assert errors[True] < 0.5 * errors[False], errors  # measured: 5x lower (vgg_small), 4x (plain20)


def test_reconstruct_needs_calibration() -> None:
    model, x, graph = _zoo("plain20")
    with pytest.raises(AdcError) as excinfo:
        ChannelPruner(model, x, reconstruct=True, graph=graph)
    assert "calibration" in _one_line_error(excinfo)


# ------------------------------------------------------------------ save/load


_LOAD_SCRIPT = """
import sys, torch
from adc.pruning.serialization import load
model = load(sys.argv[1])
x, expected = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    out = model(x)
print(float((out - expected).abs().max()))
"""


def test_save_load_in_a_fresh_process(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _randomize_bn(build_model("zoo:resnet20", num_classes=10, in_channels=3), seed=0).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    policy = {u.name: 0.6 for u in find_units(model, x[:1])}
    pruned = prune(model, x[:1], policy, round_to=4, calibration=_calibration(), reconstruct=True).eval()
    path = save(pruned, tmp_path / "small.pt", policy=policy, meta={"note": "test"})
    with torch.no_grad():
        torch.save((x, pruned(x)), tmp_path / "expected.pt")

    payload = torch.load(path, weights_only=True)  # nothing but tensors and strings
    assert set(payload) == {"adc_header", "state_dict"}
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    header, _ = read_header(path)
    assert header["policy"] == policy and header["meta"] == {"note": "test"}

    result = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(path), str(tmp_path / "expected.pt")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) <= 1e-6

    again = load(path)  # and in this process, saved again
    assert count(again, x[:1]) == count(pruned, x[:1])
    save(again, tmp_path / "again.pt")
    assert torch.allclose(load(tmp_path / "again.pt")(x), pruned(x), atol=1e-6)


def test_save_unpruned_model_round_trips(tmp_path: Path) -> None:
    model = build_model("zoo:plain20", num_classes=4, in_channels=1).eval()
    x = torch.randn(1, 1, 8, 8)
    loaded = load(save(model, tmp_path / "m.pt"))
    assert torch.equal(loaded(x), model(x))


def test_save_without_spec_raises() -> None:
    model, _, _ = _zoo("plain20")
    with pytest.raises(AdcError) as excinfo:
        save(model, "/nonexistent/never-written.pt")
    assert "spec" in _one_line_error(excinfo)


@pytest.mark.parametrize("content", ["missing", "random", "state_dict", "bad_header"])
def test_load_bad_files_raise_one_line(tmp_path: Path, content: str) -> None:
    path = tmp_path / "model.pt"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "state_dict":
        torch.save(_zoo("plain20")[0].state_dict(), path)
    elif content == "bad_header":
        torch.save({"adc_header": "{not json", "state_dict": {}}, path)
    with pytest.raises(AdcError) as excinfo:
        load(path)
    assert str(path) in _one_line_error(excinfo)


# ---------------------------------------------------------------------- export


def _pruned_for_export(kind: str) -> tuple[nn.Module, torch.Tensor]:
    model, x, graph = _case("tv", "mobilenet_v2", (1, 3, 64, 64)) if kind == "tv" else _zoo("mobilenet")
    pruner = ChannelPruner(model, x, criterion="random", round_to=8, graph=graph)
    return pruner.prune({u.name: 0.5 for u in graph.units}), x


@pytest.mark.parametrize("kind", ["zoo", "tv"])
def test_onnx_export_matches_torch(tmp_path: Path, kind: str) -> None:
    pruned, x = _pruned_for_export(kind)
    path = export(pruned, x, tmp_path / "m.onnx", format="onnx")
    batch = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(4))  # dynamic batch axis
    with torch.no_grad():
        expected = pruned(batch).numpy()
    np.testing.assert_allclose(onnx_outputs(path, batch), expected, atol=1e-4, rtol=0)


def test_onnx_goes_through_the_dynamo_exporter_with_a_free_batch_axis(tmp_path: Path) -> None:
    import onnx

    pruned, x = _pruned_for_export("zoo")
    path, exporter = export_with(pruned, x, tmp_path / "m.onnx")
    assert exporter == "dynamo"
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic, not 1


def test_a_model_torch_export_cannot_trace_falls_back_and_says_so(tmp_path: Path) -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if float(x.sum()) > -1e9 else -self.fc(x)  # a branch on a value: no torch.export

    model, x = DataDependent().eval(), torch.ones(1, 4)
    path, exporter = export_with(model, x, tmp_path / "m.onnx")
    assert exporter == "torchscript"
    with torch.no_grad():
        np.testing.assert_allclose(onnx_outputs(path, x), model(x).numpy(), atol=1e-6)


def test_torchscript_export_matches_torch(tmp_path: Path) -> None:
    pruned, x = _pruned_for_export("zoo")
    pruned.train()
    path = export(pruned, x, tmp_path / "m.ts", format="torchscript")
    assert pruned.training, "export must not change the caller's model mode"
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        assert torch.allclose(loaded(x), pruned.eval()(x), atol=1e-6)


def test_unknown_export_format(tmp_path: Path) -> None:
    pruned, x = _pruned_for_export("zoo")
    with pytest.raises(AdcError) as excinfo:
        export(pruned, x, tmp_path / "m.tflite", format="tflite")
    assert "onnx" in _one_line_error(excinfo)


# ------------------------------------------------------------------ bad inputs


def test_unknown_unit_is_named() -> None:
    model, x, graph = _zoo("plain20")
    pruner = ChannelPruner(model, x, graph=graph)
    for call in (lambda p: cost(graph, p), pruner.prune):
        with pytest.raises(AdcError) as excinfo:
            call({"features.99.conv": 0.5})
        assert "features.99.conv" in _one_line_error(excinfo)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, float("nan"), "0.5", True])
def test_bad_sparsity(sparsity: object) -> None:
    model, x, graph = _zoo("plain20")
    unit = graph.units[0].name
    for call in (lambda p: cost(graph, p), ChannelPruner(model, x, graph=graph).prune):
        with pytest.raises(AdcError) as excinfo:
            call({unit: sparsity})
        assert unit in _one_line_error(excinfo)


def test_numpy_sparsities_are_accepted() -> None:
    _, _, graph = _zoo("plain20")
    unit = graph.units[0].name
    assert cost(graph, {unit: np.float32(0.5)}) == cost(graph, {unit: 0.5})
    assert cost(graph, {unit: np.int64(0)}) == cost(graph, {})


def test_unknown_criterion_lists_valid_names() -> None:
    model, x, graph = _zoo("plain20")
    with pytest.raises(AdcError) as excinfo:
        ChannelPruner(model, x, criterion="l3", graph=graph)
    message = _one_line_error(excinfo)
    assert "l3" in message and all(name in message for name in CRITERIA.names())


@pytest.mark.parametrize("round_to", [0, -8, 2.5])
def test_bad_round_to(round_to: object) -> None:
    model, x, graph = _zoo("plain20")
    with pytest.raises(AdcError) as excinfo:
        ChannelPruner(model, x, round_to=round_to, graph=graph)
    assert "round_to" in _one_line_error(excinfo)
    with pytest.raises(AdcError):
        cost(graph, {}, round_to)


def test_bad_kept_indices() -> None:
    model, x, graph = _zoo("plain20")
    pruner = ChannelPruner(model, x, graph=graph)
    unit = graph.units[0]
    for bad in ([], [0, 0], [unit.channels]):
        with pytest.raises(AdcError) as excinfo:
            pruner.prune_indices({unit.name: bad})
        assert unit.name in _one_line_error(excinfo)


class _Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this layer is broken\nsecond line of the message")


class _FailsUnderTracing(nn.Module):
    """Runs in a plain forward but not while Torch-Pruning traces (which enables grad)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise TypeError("cannot trace me")
        return x


@pytest.mark.parametrize("case", ["module_raises", "wrong_channels", "wrong_rank", "fails_under_tracing"])
def test_unrunnable_model_names_the_module(case: str) -> None:
    model = _build("zoo", "plain20", (1, 3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    expected = "features.0.0"
    if case == "module_raises":
        model.features[4] = _Raises()
        expected = "features.4"
    elif case == "wrong_channels":
        x = torch.randn(1, 1, 32, 32)
    elif case == "wrong_rank":
        x = torch.randn(3, 32, 32)
        expected = "features.0."  # the conv or its batch norm, depending on the torch version
    else:
        model.features[4] = _FailsUnderTracing()
        expected = "features.4"
    with pytest.raises(AdcError) as excinfo:
        analyze(model, x)
    message = _one_line_error(excinfo)
    assert expected in message and "PlainNet" in message
    with pytest.raises(AdcError):
        ChannelPruner(model, x)


def test_model_without_layers() -> None:
    with pytest.raises(AdcError) as excinfo:
        analyze(nn.Sequential(nn.ReLU()), torch.randn(1, 3))
    assert "no conv or linear" in _one_line_error(excinfo)
