"""``adc.search``: agents end to end on a trained model, user evaluation, determinism, resume, refusals."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import adc
from adc.cost import count
from adc.errors import AdcError
from adc.models import build_model
from adc.search import CHECKPOINT_DIR, HISTORY_FILE

search_module = importlib.import_module("adc.search")  # the module: adc.search is the function

FAST = {"bn_calibration": 128, "val_size": 500}


def stub_evaluate(model: nn.Module) -> dict[str, float]:
    return {"top1": 0.5}


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("zoo:vgg_small", num_classes=10, in_channels=1).eval()


def assert_meets_flops(pruned: nn.Module, model: nn.Module, x: torch.Tensor, fraction: float) -> float:
    """FLOPs counted independently with FlopCounterMode on the real models."""
    ratio = count(pruned, x).flops / count(model, x).flops
    assert ratio <= fraction + 1e-9
    return ratio


def check_result(result, trained, digits_input, agent, episodes):
    """The result of a 50%-FLOPs search, and its pruned model counted independently."""
    assert not result.interrupted
    assert len(result.history) == (1 if agent == "uniform" else episodes)
    assert result.reward == max(r["reward"] for r in result.history)
    assert set(result.policy) == set(result.kept)
    assert 0.0 < result.metrics["top1"] <= 1.0
    assert result.metrics["flops_ratio"] <= 0.5 + 1e-9
    for record in result.history:
        assert record["budget_use"]["flops"] <= 1.0 + 1e-9
        assert record["budget_use"]["flops"] >= 0.97  # fill_budget
    pruned = result.prune(trained)
    ratio = assert_meets_flops(pruned, trained, digits_input, 0.5)
    assert ratio == pytest.approx(result.metrics["flops_ratio"], abs=1e-6)
    # another copy of the same architecture gets the same pruned shapes
    assert [p.shape for p in result.prune(build_model("zoo:plain20", num_classes=10, in_channels=1)).parameters()] == \
        [p.shape for p in pruned.parameters()]


@pytest.mark.parametrize("agent, episodes", [("random", 3), ("uniform", 2)])
def test_search_result_prunes_to_a_model_within_budget(agent, episodes, trained, digits, digits_input):
    result = adc.search(trained, digits_input, data=digits, budget={"flops": 0.5}, agent=agent, episodes=episodes, **FAST)
    check_result(result, trained, digits_input, agent, episodes)


def test_search_with_a_user_evaluate_function_and_two_budgets(trained, digits, digits_input):
    images = torch.stack([x for x, _ in digits.val])
    labels = torch.tensor([y for _, y in digits.val])
    calls = []

    def my_eval(model: nn.Module) -> dict[str, float]:
        calls.append(1)
        with torch.no_grad():
            top1 = (model(images).argmax(1) == labels).float().mean().item()
        return {"top1": top1, "my_metric": 1.0}

    result = adc.search(trained, digits_input, evaluate=my_eval, budget=["flops=0.5", "params=0.6"], agent="random",
                        episodes=2, bn_images=torch.stack([digits.train[i][0] for i in range(128)]))
    assert len(calls) == 1 + 2  # the unpruned model once, then one per episode
    assert result.original["top1"] > 0.9
    assert result.metrics["my_metric"] == 1.0
    assert result.metrics["flops_ratio"] <= 0.5 + 1e-9 and result.metrics["params_ratio"] <= 0.6 + 1e-9
    pruned = result.prune()
    assert_meets_flops(pruned, trained, digits_input, 0.5)
    assert count(pruned, digits_input).params <= 0.6 * count(trained, digits_input).params


def test_ddpg_search_meets_the_budget_and_same_seed_gives_the_same_search(make_trained, digits, digits_input):
    runs = []
    for _ in range(2):
        result = adc.search(make_trained(), digits_input, data=digits, budget={"flops": 0.5}, agent="ddpg", episodes=5,
                            seed=3, agent_options={"warmup": 2, "batch_size": 16}, **FAST)
        runs.append(result)
    a, b = runs
    check_result(a, make_trained(), digits_input, "ddpg", 5)
    assert [r["phase"] for r in a.history][:2] == ["uniform", "warmup"]
    assert [r["reward"] for r in a.history] == [r["reward"] for r in b.history]
    assert [r["policy"] for r in a.history] == [r["policy"] for r in b.history]
    assert a.policy == b.policy


class Stop(Exception):
    pass


def test_interrupted_search_resumes_to_the_same_total(trained, digits, digits_input, tmp_path):
    common = dict(data=digits, budget={"flops": 0.5}, agent="random", episodes=5, seed=1, checkpoint_every=2, **FAST)

    def interrupt_after_3(record, best):
        if record["episode"] == 2:
            raise KeyboardInterrupt

    first = adc.search(trained, digits_input, out=tmp_path, progress=interrupt_after_3, **common)
    assert first.interrupted
    assert len(first.history) == 3
    saved = json.loads((tmp_path / CHECKPOINT_DIR / HISTORY_FILE).read_text())
    assert len(saved) == 3  # the checkpoint is written on interrupt, not only every 2 episodes

    seen = []
    resumed = adc.search(trained, digits_input, out=tmp_path, resume=True, progress=lambda r, b: seen.append(r["episode"]),
                         **common)
    assert not resumed.interrupted
    assert seen == [3, 4]
    assert len(resumed.history) == 5
    assert [r["episode"] for r in resumed.history] == list(range(5))
    # resuming restored the random generator: the same five policies as an uninterrupted run
    straight = adc.search(trained, digits_input, **common)
    assert [r["policy"] for r in resumed.history] == [r["policy"] for r in straight.history]
    assert resumed.reward == straight.reward


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(AdcError, match="nothing to resume"):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, agent="random", episodes=2,
                   out=tmp_path, resume=True)


def test_an_exception_in_progress_is_not_swallowed(tmp_path):
    def boom(record, best):
        raise Stop

    with pytest.raises(Stop):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, agent="random", episodes=2, progress=boom)


# -- refusals before the search spends any time ----------------------------------------


def refused(reward=None, budget=("flops=0.5",), **kwargs) -> str:
    """Run a search that must be refused; return the message. Asserts no episode was played."""
    episodes = []
    with pytest.raises(AdcError) as err:
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, budget=list(budget), agent="random",
                   episodes=3, reward=reward or "acc", progress=lambda r, b: episodes.append(r), **kwargs)
    assert not episodes
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("body, spec, expected", [
    (None, "missing.py:fn", "does not exist"),
    ("def other(m):\n    return 1.0\n", "rew.py:fn", "no callable named 'fn'"),
    ("def fn(m, extra):\n    return 1.0\n", "rew.py:fn", "exactly one argument"),
    ("def fn(m):\n    return float('nan')\n", "rew.py:fn", "finite"),
    ("def fn(m):\n    return 'high'\n", "rew.py:fn", "must return a float"),
    ("def fn(m):\n    return m['no_such_metric']\n", "rew.py:fn", "KeyError"),
    ("import no_such_module_xyz\ndef fn(m):\n    return 1.0\n", "rew.py:fn", "importing"),
])
def test_reward_plugin_errors_are_refused_at_search_start(body, spec, expected, tmp_path):
    if body is not None:
        (tmp_path / "rew.py").write_text(body)
    message = refused(reward=f"{tmp_path}/{spec}")
    assert expected in message
    assert spec.split(":")[0] in message  # names the plugin


def test_reward_plugin_from_a_file_drives_the_search(tmp_path):
    (tmp_path / "rew.py").write_text("def fn(m):\n    return m['top1'] - m['flops_ratio']\n")
    result = adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, agent="random", episodes=2,
                        reward=f"{tmp_path}/rew.py:fn")
    for r in result.history:
        assert r["reward"] == pytest.approx(0.5 - r["metrics"]["flops_ratio"])


def test_unreachable_budget_is_refused_before_the_search():
    message = refused(budget=["flops=0.01"], min_keep=0.2)
    assert "smallest reachable budget is flops=0." in message


def test_bad_search_arguments_are_refused():
    assert "unknown agent" in pytest.raises(AdcError, adc.search, tiny_model(), torch.zeros(1, 1, 8, 8),
                                            evaluate=stub_evaluate, agent="nope").value.args[0]
    with pytest.raises(AdcError, match="evaluate="):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8))
    with pytest.raises(AdcError, match="at least 1 episode"):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, episodes=0)
    if not torch.cuda.is_available():
        assert "not available" in refused(device="cuda")
    assert "unknown criterion 'nope'" in refused(criterion="nope")
    with pytest.raises(AdcError, match="top1"):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=lambda m: {"acc": 1.0}, agent="random", episodes=1)


def test_search_result_history_is_json_serialisable(tmp_path):
    result = adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, agent="random", episodes=2,
                        out=tmp_path, checkpoint_every=1)
    saved = json.loads((tmp_path / CHECKPOINT_DIR / HISTORY_FILE).read_text())
    assert [r["policy"] for r in saved] == [r["policy"] for r in result.history]
    assert all(math.isfinite(r["wall_time"]) for r in saved)
    assert np.isfinite([r["reward"] for r in saved]).all()


# -------------------------------------------------------------- final selection


class _ScoringEnv:
    """Just what select_on_holdout uses: units, evaluate_fn, score_kept."""

    def __init__(self) -> None:
        self.units = [type("U", (), {"name": n})() for n in ("a", "b")]
        self.evaluate_fn = lambda model: {"top1": 0.0}

    def score_kept(self, kept: np.ndarray) -> dict:
        top1 = float(self.evaluate_fn(kept)["top1"])
        return {"reward": top1, "metrics": {"top1": top1}}


def test_final_selection_rescores_the_best_distinct_policies_and_restores_the_evaluator():
    env = _ScoringEnv()
    search_evaluate = env.evaluate_fn
    rewards = [0.5, 0.9, 0.9, 0.8, 0.7, 0.1]
    kept = [(1, 1), (2, 2), (2, 2), (3, 3), (4, 4), (5, 5)]  # episodes 1 and 2 are the same policy
    history = [{"episode": i, "reward": r, "kept": {"a": k[0], "b": k[1]}} for i, (r, k) in enumerate(zip(rewards, kept))]
    holdout = {2: 0.6, 3: 0.95, 4: 0.7}  # the search's top policy is not the best on held-out images
    selection = search_module.select_on_holdout(env, history, lambda kept_: {"top1": holdout[int(kept_[0])]}, top=3)
    assert [c["episode"] for c in selection] == [3, 4, 1]
    assert [c["holdout_reward"] for c in selection] == [0.95, 0.7, 0.6]
    assert selection[0]["reward"] == 0.8
    assert env.evaluate_fn is search_evaluate
    assert search_module.select_on_holdout(env, history[:1], lambda k: {"top1": 1.0}, top=3) == []


def test_search_keeps_the_policy_the_final_selection_chose(trained, digits, digits_input, monkeypatch, tmp_path):
    monkeypatch.setattr(search_module, "MIN_HOLDOUT", 50)  # digits has a small validation split
    result = adc.search(trained, digits_input, data=digits, budget={"flops": 0.5}, agent="random", episodes=6, seed=0,
                        bn_calibration=128, val_size=60, select_top=4, select_size=200)
    assert 2 <= len(result.selection) <= 4
    chosen = result.history[result.selection[0]["episode"]]
    assert result.episode == chosen["episode"] and result.policy == chosen["policy"] and result.reward == chosen["reward"]
    holdout = [c["holdout_reward"] for c in result.selection]
    assert holdout == sorted(holdout, reverse=True)
    ranked = sorted(result.history, key=lambda r: r["reward"], reverse=True)
    assert result.selection[0]["episode"] in [r["episode"] for r in ranked[:4]]
    from adc.outputs import write_report

    text = write_report(tmp_path / "report.md", graph=result._pruner.graph, result=result, settings={},
                        counted={"flops": 1.0, "params": 1.0}).read_text()
    assert f"- result: episode {result.episode}," in text
    assert f"final selection: the {len(result.selection)} best distinct policies" in text
    off = adc.search(trained, digits_input, data=digits, budget={"flops": 0.5}, agent="random", episodes=6, seed=0,
                     bn_calibration=128, val_size=60, select_top=0)
    assert off.selection == [] and off.reward == max(r["reward"] for r in off.history)
