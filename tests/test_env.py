"""The pruning environment, budgets and rewards (issue 3).

The property test drives the clipping through :meth:`PruningEnv.play_actions`
(the same per-step code as ``step``, without pruning or evaluating), so
thousands of random policies cost seconds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from torch import nn

import envs  # noqa: F401  (registers adc/Prune-v0)
from adc.objective.budgets import BUDGET_METRICS, BudgetSpec, parse_budget
from adc.utils.errors import AdcError
from adc.inputs.models import build_model
from adc.pruning.pruner import ChannelPruner
from adc.objective.rewards import REWARDS, check_reward, get_reward
from adc.inputs.training import evaluate, recalibrate_bn
from adc.envs.pruning_env import BOUND_FEATURES, OBSERVATION_FEATURES, PruningEnv
from adc.envs.task import ModelTask
from adc.objective.budgets import BUDGET_METRICS, BudgetSpec, parse_budget


def stub_evaluate(model: nn.Module) -> dict[str, float]:
    return {"top1": 0.5, "top5": 0.9, "loss": 1.0}


def make_env(model: nn.Module, x: torch.Tensor, *, evaluate=stub_evaluate, budgets=("flops=0.5",), **kwargs) -> PruningEnv:
    """An environment on a freshly built task (the expensive part: trace, rank, score the unpruned model)."""
    return PruningEnv(ModelTask.build(model, x, score=evaluate, budgets=list(budgets), **kwargs))


def small_model(spec: str = "zoo:vgg_small", in_channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return build_model(spec, num_classes=10, in_channels=in_channels).eval()


# -- gymnasium conformance ------------------------------------------------------------------


def test_check_env_passes_with_warnings_as_errors():
    task = ModelTask.build(small_model(), torch.zeros(1, 1, 8, 8), score=stub_evaluate, budgets=["flops=0.5"])
    env = gymnasium.make("adc/Prune-v0", task=task)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    assert env.spec.id == "adc/Prune-v0"
    assert env.observation_space.shape == (len(OBSERVATION_FEATURES),)


def test_episode_through_gymnasium_make_ends_terminated_with_policy_and_costs():
    task = ModelTask.build(small_model(), torch.zeros(1, 1, 8, 8), score=stub_evaluate, budgets=["flops=0.5"])
    env = gymnasium.make("adc/Prune-v0", task=task)
    obs, _ = env.reset(seed=0)
    n = env.unwrapped.num_units
    for i in range(n):
        assert env.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = env.step(np.array([0.3], dtype=np.float32))
        assert not truncated
        assert terminated == (i == n - 1)
        if not terminated:
            assert reward == 0.0
    assert set(info) >= {"policy", "kept", "metrics", "reward", "budget_use", "timing", "applied_action"}
    assert info["budget_use"]["flops"] <= 1.0 + 1e-9
    assert info["metrics"]["flops_ratio"] <= 0.5 + 1e-9
    assert reward == info["reward"] == 0.5  # stub top1, reward "acc"


def test_play_actions_matches_stepping():
    """The cheap hook the property test relies on applies exactly what step() applies."""
    env = make_env(small_model("zoo:resnet20", 3), torch.zeros(1, 3, 8, 8), budgets=["flops=0.4", "params=0.6"])
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions = rng.uniform(0, 1, env.num_units)
        kept, applied = env.task.play_actions(actions)
        env.reset()
        stepped, applied_steps = [], []
        for a in actions:
            _, _, done, _, info = env.step(np.array([a], dtype=np.float32))
            stepped.append(info["kept_channels"])
            applied_steps.append(info["applied_action"])
        assert done
        assert stepped == [int(k) for k in kept]
        assert applied_steps == pytest.approx(applied)
        assert list(info["kept"].values()) == stepped
    with pytest.raises(AdcError, match="one per unit"):
        env.task.play_actions([0.5])


@pytest.mark.parametrize("fill_budget", [True, False])
def test_observed_bounds_are_the_interval_the_clipping_applies(fill_budget):
    """With observe_bounds, features 11-12 are the lowest and highest action the next step can apply."""
    task = ModelTask.build(small_model("zoo:resnet20", 3), torch.zeros(1, 3, 8, 8), score=stub_evaluate,
                           budgets=["flops=0.35", "params=0.6"], fill_budget=fill_budget)
    env = PruningEnv(task, observe_bounds=True)
    assert env.observation_space.shape == (len(OBSERVATION_FEATURES) + len(BOUND_FEATURES),)
    rng = np.random.default_rng(0)
    narrowed = 0
    for _ in range(3):
        obs, _ = env.reset()
        for _ in range(env.num_units):
            low, high = obs[-2:]
            assert env.observation_space.contains(obs) and low <= high
            narrowed += bool(low > 0 or high < 1)
            for wanted, expected in ((0.0, low), (1.0, high)):
                kept, applied = task.decide(env._i, env.kept, wanted)
                assert applied == pytest.approx(expected, abs=1e-6)
            obs, _, _, _, info = env.step(np.array([rng.uniform()], dtype=np.float32))
            assert low - 1e-6 <= info["applied_action"] <= high + 1e-6
    assert narrowed > 0  # the budget does narrow the interval somewhere
    plain = PruningEnv(task)
    assert plain.reset()[0].shape == (len(OBSERVATION_FEATURES),)


@pytest.mark.parametrize("round_to", [1, 4])
def test_threshold_actions_prune_exactly_the_channels_scoring_below_the_threshold(round_to):
    model = small_model("zoo:resnet20", 3)
    for m in model.modules():  # trained-like batch-norm scales, so the bn_scale scores differ
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.1, 2.0, generator=torch.Generator().manual_seed(m.num_features))
    task = make_env(model, torch.zeros(1, 3, 8, 8), criterion="bn_scale", round_to=round_to, min_keep=0.1).task
    pruner = task.evaluator.pruner
    assert task.threshold_actions(0.0) == [0.0] * task.num_units
    previous = np.zeros(task.num_units)
    for threshold in (0.5, 0.9, 1.2, 3.0):
        actions = np.asarray(task.threshold_actions(threshold))
        assert (actions >= previous - 1e-12).all()  # non-decreasing in the threshold
        previous = actions
        kept = task.space.kept_of_actions(actions)
        for i, u in enumerate(task.units):
            scores = pruner.scores[u.name] / pruner.scores[u.name].mean()
            below = int((scores < threshold).sum())
            choices = task.space.choices[i]
            expected = choices[min(np.searchsorted(choices, u.channels - below), len(choices) - 1)]
            assert kept[i] == expected
            if round_to == 1 and kept[i] == u.channels - below:  # the pruner drops exactly those channels
                keep = pruner.keep_indices_of_counts(kept)[u.name]
                assert set(keep.tolist()) == set(np.flatnonzero(scores >= threshold).tolist())
    assert task.resource(task.threshold_actions(0.0)) == pytest.approx(2.0)  # flops=0.5: the unpruned model uses 2x


# -- the property test: every clipped policy meets every budget and uses it ---------------

PROPERTY_MODELS = {
    "zoo:plain20": (1, 3, 8, 8),
    "zoo:resnet20": (1, 3, 8, 8),
    "zoo:mobilenet": (1, 3, 8, 8),
    "torchvision:resnet18": (1, 3, 64, 64),
    "torchvision:mobilenet_v2": (1, 3, 64, 64),
}
PROPERTY_BUDGETS = {
    "flops=0.5": ["flops=0.5"],
    "flops=0.25": ["flops=0.25"],
    "params=0.5": ["params=0.5"],
    "flops+params": ["flops=0.5", "params=0.4"],
}
FILL_BOUND = 0.97  # measured: min 0.9895, median 0.9994 of the tightest budget over these 2,280 policies
BUDGET_USE: dict[tuple[str, str], list[float]] = {}


@pytest.fixture(scope="module")
def pruners() -> Callable[[str], ChannelPruner]:
    """One traced pruner per model, shared by the budget cases (tracing torchvision models takes seconds)."""
    cache: dict[str, ChannelPruner] = {}

    def get(spec: str) -> ChannelPruner:
        if spec not in cache:
            torch.manual_seed(0)
            model = build_model(spec, num_classes=10, in_channels=3).eval()
            cache[spec] = ChannelPruner(model, torch.zeros(PROPERTY_MODELS[spec]))
        return cache[spec]

    return get


def random_action_sequences(rng: np.random.Generator, n_units: int, count: int) -> list[np.ndarray]:
    """Uniform, skewed and extreme action sequences (all-0, all-1, alternating, sparse spikes)."""
    seqs = [np.zeros(n_units), np.ones(n_units), np.arange(n_units) % 2.0, 1.0 - np.arange(n_units) % 2.0]
    while len(seqs) < count:
        kind = len(seqs) % 4
        if kind == 0:
            seqs.append(rng.uniform(0, 1, n_units))
        elif kind == 1:
            seqs.append(rng.beta(0.3, 0.3, n_units))
        elif kind == 2:
            seqs.append(rng.choice([0.0, 1.0], n_units))
        else:
            seqs.append(np.clip(rng.normal(rng.uniform(), 0.3, n_units), 0, 1))
    return seqs


def check_policies(env: PruningEnv, sequences: list[np.ndarray], min_keep: float, max_keep: float) -> list[float]:
    """Assert the budget, bounds and applied-action properties for every sequence; return each policy's budget use."""
    task, space = env.task, env.task.space
    uses = []
    for actions in sequences:
        kept, applied = task.play_actions(actions)
        for b in task.budgets:
            assert b.price(kept) <= b.limit * (1 + 1e-9), (b.key, b.price(kept) / b.limit, actions.tolist())
        uses.append(max(b.price(kept) / b.limit for b in task.budgets))
        for unit, k, a in zip(task.units, kept, applied):
            sparsity = 1.0 - k / unit.channels
            # one rounding step of the unit (a channel, a round_to multiple, or a channel per group)
            step = (unit.channel_groups if unit.channel_groups > 1 else space.round_to) / unit.channels
            assert 1 - max_keep - step <= sparsity <= 1 - min_keep + step, (unit.name, k, unit.channels)
            assert 1 <= k <= unit.channels
            assert unit.kept(space.sparsity_of(a), space.round_to) == k, (unit.name, a, k)
    return uses


@pytest.mark.parametrize("budget", list(PROPERTY_BUDGETS))
@pytest.mark.parametrize("spec", list(PROPERTY_MODELS))
def test_every_random_policy_meets_every_budget_and_fills_it(spec, budget, pruners):
    pruner = pruners(spec)
    env = make_env(pruner.model, pruner.example_input, budgets=PROPERTY_BUDGETS[budget],
                     pruner=pruner)
    count = 150 if spec.startswith("zoo:") else 60
    rng = np.random.default_rng(abs(hash((spec, budget))) % 2**32)
    uses = check_policies(env, random_action_sequences(rng, env.num_units, count), 0.2, 1.0)
    BUDGET_USE[(spec, budget)] = uses
    assert min(uses) >= FILL_BOUND, f"{spec} {budget}: budget use min {min(uses):.4f}, median {np.median(uses):.4f}"


@pytest.mark.parametrize("spec", ["zoo:resnet20", "zoo:mobilenet"])
def test_custom_keep_bounds_and_rounding_still_meet_the_budget(spec, pruners):
    base = pruners(spec)
    pruner = ChannelPruner(base.model, base.example_input, round_to=4, graph=base.graph)
    env = make_env(pruner.model, pruner.example_input, budgets=["flops=0.5"],
                     min_keep=0.3, max_keep=0.9, pruner=pruner)
    uses = check_policies(env, random_action_sequences(np.random.default_rng(1), env.num_units, 100), 0.3, 0.9)
    assert min(uses) >= 0.9  # coarser rounding: the last units' steps are bigger


def test_without_fill_budget_policies_only_meet_the_cap(pruners):
    pruner = pruners("zoo:plain20")
    env = make_env(pruner.model, pruner.example_input, budgets=["flops=0.5"],
                     pruner=pruner, fill_budget=False)
    uses = check_policies(env, random_action_sequences(np.random.default_rng(2), env.num_units, 60), 0.2, 1.0)
    assert max(uses) <= 1.0 + 1e-9
    assert min(uses) < 0.9  # cap-only clipping leaves budget unused (DESIGN.md); fill_budget fixes that


# -- budgets ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("flops=0.5", BudgetSpec("flops", 0.5, True)),
    ("flops=120M", BudgetSpec("flops", 120e6, False)),
    ("params=1.5M", BudgetSpec("params", 1.5e6, False)),
    ("macs=3e6", BudgetSpec("macs", 3e6, False)),
    (" FLOPS = 0.25 ", BudgetSpec("flops", 0.25, True)),
    ("params=200k", BudgetSpec("params", 200e3, False)),
])
def test_parse_budget(text, expected):
    got = parse_budget(text)
    assert got.key == expected.key and got.relative == expected.relative
    assert got.value == pytest.approx(expected.value)


@pytest.mark.parametrize("text", ["flops", "flops=abc", "foo=0.5", "flops=-1", "flops=1", "flops=", "=0.5", "flops=2x"])
def test_bad_budget_is_one_line_naming_input_and_valid_keys(text):
    with pytest.raises(AdcError) as err:
        parse_budget(text)
    message = str(err.value)
    assert "\n" not in message
    assert repr(text) in message
    for key in BUDGET_METRICS.names():
        assert key in message


def test_absolute_budget_resolves_against_the_model():
    env = make_env(small_model(), torch.zeros(1, 1, 8, 8), budgets=["flops=0.5"])
    original = env.task.budgets[0].original
    absolute = f"flops={original * 0.6 / 1e3:.3f}K"
    env2 = make_env(small_model(), torch.zeros(1, 1, 8, 8), budgets=[absolute], pruner=env.task.evaluator.pruner)
    assert env2.task.budgets[0].fraction == pytest.approx(0.6, rel=1e-3)
    with pytest.raises(AdcError, match="nothing to prune"):
        make_env(small_model(), torch.zeros(1, 1, 8, 8), budgets=[f"flops={original * 2:.0f}"],
                   pruner=env.task.evaluator.pruner)


def test_unreachable_budget_is_refused_before_any_evaluation_with_the_smallest_reachable_value():
    calls = []
    model = small_model()
    pruner = ChannelPruner(model, torch.zeros(1, 1, 8, 8))
    with pytest.raises(AdcError) as err:
        make_env(model, torch.zeros(1, 1, 8, 8), evaluate=lambda m: calls.append(1) or {"top1": 1.0},
                 budgets=["flops=0.01"], min_keep=0.2, pruner=pruner)
    assert not calls
    message = str(err.value)
    assert "unreachable" in message and "\n" not in message
    # the smallest reachable value, computed independently: every unit at its minimum kept count
    env = make_env(model, torch.zeros(1, 1, 8, 8), budgets=["flops=0.5"], pruner=pruner)
    smallest = env.task.budgets[0].price(env.task.space.min_kept) / env.task.budgets[0].original
    assert f"flops={smallest:.3f}" in message
    assert smallest > 0.01
    with pytest.raises(AdcError, match=r"flops=1\.5 is an amount \(1\.5 flops\), a fraction of the original is "
                                       r"written below 1"):  # a ratio above 1 by mistake: an amount of 1.5 FLOPs
        make_env(model, torch.zeros(1, 1, 8, 8), budgets=["flops=1.5"], pruner=pruner)
    # and that smallest value is indeed accepted
    make_env(model, torch.zeros(1, 1, 8, 8), budgets=[f"flops={smallest + 0.001:.4f}"],
               pruner=pruner)


def test_same_budget_twice_is_refused():
    with pytest.raises(AdcError, match="twice"):
        make_env(small_model(), torch.zeros(1, 1, 8, 8), budgets=["flops=0.5", "flops=0.4"])


# -- rewards ----------------------------------------------------------------------------

RECORD = {"top1": 0.9, "top5": 0.99, "loss": 0.3, "flops": 2e6, "macs": 1e6, "params": 5e4,
          "original_flops": 4e6, "original_macs": 2e6, "original_params": 1e5,
          "flops_ratio": 0.5, "macs_ratio": 0.5, "params_ratio": 0.5,
          # metrics of the latency / energy budgets, for rewards that read them
          "latency": 0.01, "original_latency": 0.02, "latency_ratio": 0.5,
          "energy": 1e-3, "original_energy": 2e-3, "energy_ratio": 0.5}


@pytest.mark.parametrize("name", REWARDS.names())
def test_every_registered_reward_is_a_finite_float_on_a_record(name):
    value = check_reward(get_reward(name), RECORD, label=name)
    assert isinstance(value, float) and math.isfinite(value)


def test_registered_rewards_values():
    assert get_reward("acc")(RECORD) == 0.9
    assert get_reward("acc_flops")(RECORD) == pytest.approx(-0.1 * math.log(2e6))
    assert get_reward("acc_params")(RECORD) == pytest.approx(-0.1 * math.log(5e4))
    assert get_reward("loss")(RECORD) == -0.3
    better = dict(RECORD, top1=0.95, loss=0.2)
    for name in REWARDS.names():
        assert get_reward(name)(better) > get_reward(name)(RECORD)


def test_reward_plugin_from_a_file(tmp_path):
    (tmp_path / "rew.py").write_text("def fn(m):\n    return m['top1'] - 0.1 * m['flops_ratio']\n")
    fn = get_reward(f"{tmp_path}/rew.py:fn")
    assert check_reward(fn, RECORD) == pytest.approx(0.85)


def test_unknown_reward_names_the_valid_ones():
    with pytest.raises(AdcError, match="acc_flops"):
        get_reward("accuracy")


# -- adaptive BN ----------------------------------------------------------------------


def test_bn_recalibration_raises_a_pruned_models_accuracy(trained, digits, digits_input):
    env = make_env(trained, digits_input, budgets=["flops=0.5"])
    task = env.task
    kept = task.space.kept_of_actions(task.uniform_actions())
    assert task.budgets[0].price(kept) <= task.budgets[0].limit
    policy = {u.name: 1.0 - k / u.channels for u, k in zip(task.units, kept)}
    val = [digits.val[i] for i in range(len(digits.val))]
    val = [(torch.stack([x for x, _ in val]), torch.tensor([y for _, y in val]))]
    unpruned = evaluate(trained, val)["top1"]
    stale = evaluate(task.evaluator.pruner.prune(policy), val)["top1"]
    gen = torch.Generator().manual_seed(0)
    images = torch.stack([digits.train[int(i)][0] for i in torch.randperm(len(digits.train), generator=gen)[:256]])
    recalibrated = evaluate(recalibrate_bn(task.evaluator.pruner.prune(policy), images), val)["top1"]
    print(f"val top-1: unpruned {unpruned:.3f}, uniform l1 at 50% FLOPs {stale:.3f}, with adaptive BN {recalibrated:.3f}")
    assert recalibrated > stale + 0.05
