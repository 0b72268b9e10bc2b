"""Latency lookup table (with a stubbed timer), energy model, and latency / energy budgets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from adc.objective.budgets import parse_budget, resolve_budgets
from adc.analysis.energy import EnergyModel, EnergyPrice, load_energy_model
from adc.utils.errors import AdcError
from adc.analysis.graph import analyze
from adc.analysis.latency import LatencyCache, build_latency_table
from adc.analysis.space import PolicySpace
from adc.analysis.timers import Timer  # noqa: F401  (the interface FakeTimer implements)
from adc.envs.pruning_env import PruningEnv
from adc.envs.task import ModelTask
from adc.inputs.models import build_model
from adc.objective.rewards import get_reward
from adc.pruning.pruner import ChannelPruner
from helpers import FakeTimer


def table_of(model: nn.Module, x: torch.Tensor, *, timer: Timer, min_keep: float = 0.2, **kwargs):
    """The latency table a search with ``min_keep`` would build (calibrated on the unpruned and the smallest model)."""
    pruner = ChannelPruner(model, x)
    space = PolicySpace(pruner.graph, min_keep=min_keep)
    return build_latency_table(model, x, space, prune_to=pruner.prune_kept, timer=timer, **kwargs)


class StubTimer(FakeTimer):
    """Deterministic: 1 us per parameter plus 1 us."""

    def seconds(self, module: nn.Module) -> float:
        return 1e-6 * (1 + sum(p.numel() for p in module.parameters()))


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


def stub_value(cin: int, cout: int) -> float:
    """What StubTimer returns for conv3x3(cin, cout) + BN(cout) + ReLU."""
    return 1e-6 * (1 + cin * cout * 9 + 2 * cout)


@pytest.fixture
def small(tmp_path):
    model, x = small_net(), torch.randn(1, 3, 8, 8)
    graph = analyze(model, x)
    timer = StubTimer()
    table = table_of(model, x, timer=timer, cache_dir=tmp_path, min_keep=0.25, points=4)
    return model, x, graph, table, timer


def test_second_build_measures_nothing(small, tmp_path):
    model, x, graph, table, timer = small
    assert timer.calls > 0 and table.measurements == timer.calls
    again = StubTimer()
    table2 = table_of(model, x, timer=again, cache_dir=tmp_path, min_keep=0.25, points=4)
    assert again.calls == 0 and table2.measurements == 0
    kept = np.array([8.0, 16.0])
    assert table2.price(kept) == pytest.approx(table.price(kept))


def test_identical_layer_shapes_share_one_measurement(tmp_path):
    model, x = build_model("zoo:resnet20", num_classes=10, in_channels=3).eval(), torch.randn(1, 3, 8, 8)
    graph = analyze(model, x)
    timer = StubTimer()
    table = table_of(model, x, timer=timer, cache_dir=tmp_path, points=3)
    entries = sum(len(a) * len(b) for a, b in zip(table.grid_in, table.grid_out))
    assert timer.calls < 0.6 * entries  # blocks after the first of each stage repeat its shapes: measured once


def test_lookup_exact_on_grid_and_monotone_between(small):
    model, x, graph, table, _ = small
    conv2 = table.layers.index("3")
    gi, go = table.grid_in[conv2], table.grid_out[conv2]
    assert len(gi) >= 3 and len(go) >= 3 and gi[-1] == 16 and go[-1] == 32
    for ci in gi:
        for co in go:
            got = table.layer_latency(np.array([ci, co], dtype=float))[conv2]
            assert got == pytest.approx(stub_value(ci, co), rel=1e-12)
    # Between grid points: monotone, and between the neighbouring entries.
    values = [table.layer_latency(np.array([c, 32.0]))[conv2] for c in range(gi[0], 17)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    mid = (gi[0] + gi[1]) / 2
    v = table.layer_latency(np.array([mid, 32.0]))[conv2]
    assert stub_value(gi[0], 32) < v < stub_value(gi[1], 32)
    # The total: unpruned prediction is the measured end-to-end time; fewer channels, less time.
    assert table.price(graph.channels) == pytest.approx(table.measured_total)
    assert table.price(np.array([4.0, 8.0])) < table.price(np.array([8.0, 16.0])) < table.price(graph.channels)


def test_corrupt_or_foreign_cache_is_rebuilt_with_a_warning(small, tmp_path):
    model, x, graph, table, _ = small
    path = next(tmp_path.glob("*.json"))
    path.write_text("{not json")
    timer = StubTimer()
    with pytest.warns(UserWarning, match="unusable"):
        rebuilt = table_of(model, x, timer=timer, cache_dir=tmp_path, min_keep=0.25, points=4)
    assert timer.calls > 0 and rebuilt.price(graph.channels) == pytest.approx(table.price(graph.channels))
    data = json.loads(path.read_text())  # rewritten, valid again
    data["key"]["device"] = "another machine"
    path.write_text(json.dumps(data))
    timer = StubTimer()
    with pytest.warns(UserWarning, match="unusable"):
        table_of(model, x, timer=timer, cache_dir=tmp_path, min_keep=0.25, points=4)
    assert timer.calls > 0
    data = json.loads(path.read_text())
    next(iter(data["layers"].values()))[next(iter(next(iter(data["layers"].values()))))] = -1.0
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="unusable"):
        LatencyCache(tmp_path, data["key"])


def test_latency_cache_dir_respects_adc_cache_dir(small, tmp_path, monkeypatch):
    model, x, graph, _, _ = small
    monkeypatch.setenv("ADC_CACHE_DIR", str(tmp_path / "root"))
    table_of(model, x, timer=StubTimer(), min_keep=0.25, points=2)
    assert list((tmp_path / "root" / "latency").glob("*.json"))


# ------------------------------------------------------------------------------ energy


def energy_net() -> tuple[nn.Module, torch.Tensor]:
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).eval()
    return model, torch.randn(1, 2, 5, 5)


def test_energy_of_a_hand_computed_network():
    model, x = energy_net()
    graph = analyze(model, x)
    # sram_bytes=128: weight tiles of 64 bytes = 16 words.
    price = EnergyPrice(graph, EnergyModel(sram_bytes=128))
    per_mac = 3.7 + 0.9 + 3 * 1.0  # multiply + add + 3 register-file accesses
    per_word = 640.0 + 5.0  # DRAM + staged once through SRAM
    # conv 2->4, 3x3, 5x5 output: 1800 MACs, W=72, I=50, O=100; 72*4 bytes / 64 -> 5 passes over the input.
    conv = 1800 * per_mac + (72 + 100 + 50 * 5) * per_word
    # linear 4->3 with bias: 12 MACs, W=15, I=4, O=3; 60 bytes fit in one tile.
    linear = 12 * per_mac + (15 + 3 + 4) * per_word
    assert conv == pytest.approx(285870.0) and linear == pytest.approx(14281.2)
    assert price.price(graph.channels) == pytest.approx((conv + linear) * 1e-12, rel=1e-12)
    # Keep 2 of the conv's 4 channels: 900 MACs, W=36 (3 passes), O=50; the linear: 6 MACs, W=9, I=2, O=3.
    conv2 = 900 * per_mac + (36 + 50 + 50 * 3) * per_word
    linear2 = 6 * per_mac + (9 + 3 + 2) * per_word
    assert price.price(np.array([2.0])) == pytest.approx((conv2 + linear2) * 1e-12, rel=1e-12)
    # A big SRAM: one pass everywhere.
    big = EnergyPrice(graph, EnergyModel(sram_bytes=1 << 20))
    assert big.price(graph.channels) == pytest.approx(((1800 + 12) * per_mac + (72 + 100 + 50 + 22) * per_word) * 1e-12)


def test_energy_model_from_toml_and_its_errors(tmp_path):
    good = tmp_path / "e.toml"
    good.write_text("mult_pj = 0.2\nadd_pj = 0.03\nsram_bytes = 131072\n")
    model = load_energy_model(good)
    assert (model.mult_pj, model.add_pj, model.sram_bytes, model.dram_pj) == (0.2, 0.03, 131072, 640.0)
    for text, word in [("mult_pj = 1\nflux_pj = 2\n", "flux_pj"), ("dram_pj = -5\n", "dram_pj"),
                       ("sram_pj = 'a lot'\n", "sram_pj"), ("mult_pj = \n", "TOML")]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(AdcError, match=word) as info:
            load_energy_model(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(AdcError, match="does not exist"):
        load_energy_model(tmp_path / "missing.toml")


# ------------------------------------------------------------------------------ budgets


def test_parse_time_and_energy_units():
    assert parse_budget("latency=12ms") == parse_budget("latency=0.012s")
    spec = parse_budget("latency=12ms")
    assert (spec.key, spec.relative) == ("latency", False) and spec.value == pytest.approx(0.012)
    assert parse_budget("latency=0.6").relative and parse_budget("latency=0.6").value == 0.6
    spec = parse_budget("energy=2mJ")
    assert (spec.key, spec.relative) == ("energy", False) and spec.value == pytest.approx(0.002)
    assert parse_budget("energy=0.5").relative
    assert parse_budget("energy=300uJ").value == pytest.approx(3e-4)
    for bad, word in [("latency=12", "unit"), ("latency=5kg", "unit"), ("energy=2mW", "unit"), ("flops=12ms", "suffix"),
                      ("latency=0", "positive")]:
        with pytest.raises(AdcError, match=word):
            parse_budget(bad)


def test_latency_budget_needs_a_table_and_refuses_the_unreachable(small):
    model, x, graph, table, _ = small
    space = PolicySpace(graph, min_keep=0.25)
    min_kept = space.min_kept
    assert list(min_kept) == [4.0, 8.0]
    with pytest.raises(AdcError, match="latency table"):
        resolve_budgets(["latency=0.5"], space)
    reachable = table.price(min_kept) / table.price(graph.channels)
    with pytest.raises(AdcError, match="unreachable"):
        resolve_budgets([f"latency={reachable * 0.9:.4f}"], space, latency_table=table)
    (budget,) = resolve_budgets(["latency=0.9"], space, latency_table=table)
    assert budget.original == pytest.approx(table.measured_total)


def test_rewards_acc_latency_and_acc_energy():
    record = {"top1": 0.9, "latency": 0.002, "energy": 0.003}
    assert get_reward("acc_latency")(record) == pytest.approx(-0.1 * math.log1p(2000.0))
    assert get_reward("acc_energy")(record) == pytest.approx(-0.1 * math.log1p(3e9))
    better = {"top1": 0.9, "latency": 0.001, "energy": 0.001}
    assert get_reward("acc_latency")(better) > get_reward("acc_latency")(record)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    model = build_model("zoo:plain20", num_classes=10, in_channels=1).eval()
    x = torch.randn(1, 1, 8, 8)
    table = table_of(model, x, timer=StubTimer(), cache_dir=tmp_path_factory.mktemp("lat"), points=3)
    return model, x, table


def make_env(plain, budgets):
    model, x, table = plain
    return PruningEnv(ModelTask.build(model, x, score=lambda m: {"top1": 0.5}, budgets=budgets, latency_table=table))


@pytest.mark.parametrize("budgets", [["latency=0.6"], ["energy=0.5"], ["flops=0.6", "latency=0.7", "energy=0.6"]])
def test_budgets_met_by_construction(plain, budgets):
    env = make_env(plain, budgets)
    rng = np.random.default_rng(0)
    for _ in range(15):
        kept, _ = env.task.play_actions(rng.random(env.num_units).tolist())
        for b in env.task.budgets:
            assert b.price(kept) <= b.limit * (1 + 1e-9), b.key
        assert max(b.price(kept) / b.limit for b in env.task.budgets) > 0.9  # the budget is used, too
    record = env.task.original
    for key in ("latency", "energy"):
        assert record[f"original_{key}"] > 0 and record[f"{key}_ratio"] == pytest.approx(1.0)


def test_record_carries_energy_without_a_latency_table(plain):
    model, x, _ = plain
    task = ModelTask.build(model, x, score=lambda m: {"top1": 0.5}, budgets=["flops=0.5"])
    assert "energy" in task.original and "latency" not in task.original
    rec = task.recorder.record(task.space.min_kept, {"top1": 0.5})
    assert 0 < rec["energy_ratio"] < 1 and rec["original_energy"] == pytest.approx(task.original["energy"])


def test_cli_bad_device_and_bad_energy_file(tmp_path):
    from typer.testing import CliRunner

    from adc.cli import app

    runner = CliRunner()
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["latency-table", "--model", "zoo:plain20", "--device", "cuda"])
        assert isinstance(result.exception, AdcError) and "not available" in str(result.exception)
    bad = tmp_path / "e.toml"
    bad.write_text("leakage_pj = 3\n")
    result = runner.invoke(app, ["profile", "--model", "zoo:plain20", "--energy-model", str(bad)])
    assert isinstance(result.exception, AdcError) and "leakage_pj" in str(result.exception)
