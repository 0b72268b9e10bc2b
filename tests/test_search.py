"""``adc.search``: agents end to end on a trained model, user evaluation and calibration, determinism, resume,
plug-in failures mid-search, refusals."""

from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

import adc
import adc.engine.evaluation
import adc.engine.loop as loop_module
from adc.analysis.cost import count
from adc.engine.checkpoint import Checkpoint
from adc.engine.selection import select_on_holdout
from adc.inputs.models import build_model
from adc.objective.evaluator import Evaluation
from adc.pruning.criteria import DATA_CRITERIA, LABEL_CRITERIA
from adc.utils.errors import AdcError

FAST = {"bn_calibration": 128, "val_size": 500}
NO_CALIBRATION = {"bn_calibration": 0, "reconstruct": False}  # the explicit opt-out of training images


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
    assert len(result.history) == (1 if adc.AGENTS.get(agent).one_policy else episodes)
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


@pytest.mark.parametrize("agent, episodes", [("random", 3), ("uniform", 2), ("global", 2), ("netadapt", 40)])
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
                        episodes=2, calibration=torch.stack([digits.train[i][0] for i in range(128)]),
                        reconstruct=False)
    assert len(calls) == 1 + 2  # the unpruned model once, then one per episode
    assert result.original["top1"] > 0.9
    assert result.metrics["my_metric"] == 1.0
    assert "top5" not in result.metrics and "loss" not in result.metrics  # not given: absent, not invented
    assert result.calibration["bn_images"] == 128 and "tensor" in result.calibration["source"]
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


def test_ctrl_c_stops_at_the_round_end_and_resume_gives_the_uninterrupted_search(trained, digits, digits_input,
                                                                                 tmp_path):
    common = dict(data=digits, budget={"flops": 0.5}, agent="ddpg", episodes=6, seed=1, checkpoint_every=4,
                  agent_options={"warmup": 2, "hidden": (16, 16)}, **FAST)

    def ctrl_c_at_3(record, best):
        if record["episode"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the search finishes the round and stops

    first = adc.search(trained, digits_input, out=tmp_path, progress=ctrl_c_at_3, **common)
    assert first.interrupted and first.failure is None
    assert len(first.history) == 3
    assert len(Checkpoint(tmp_path / "checkpoint").history()) == 3  # saved at the round end, not only every 4

    seen = []
    resumed = adc.search(trained, digits_input, out=tmp_path, resume=True, progress=lambda r, b: seen.append(r["episode"]),
                         **common)
    assert not resumed.interrupted
    assert seen == [3, 4, 5]
    straight = adc.search(trained, digits_input, **common)
    assert [r["policy"] for r in resumed.history] == [r["policy"] for r in straight.history]
    assert [r["reward"] for r in resumed.history] == [r["reward"] for r in straight.history]
    assert resumed.reward == straight.reward


@pytest.mark.parametrize("method", adc.agents.REFINE_METHODS)
def test_a_search_stopped_in_its_refinement_resumes_as_the_uninterrupted_search(method, trained, digits, digits_input,
                                                                              tmp_path):
    common = dict(data=digits, budget={"flops": 0.5}, agent="ddpg", episodes=10, seed=1, checkpoint_every=1,
                  refine_episodes=5, refine_method=method, agent_options={"warmup": 2, "hidden": (16, 16)}, **FAST)

    def stop_in_refinement(record, best):
        if record["episode"] == 6:
            raise KeyboardInterrupt

    first = adc.search(trained, digits_input, out=tmp_path, progress=stop_in_refinement, **common)
    assert first.interrupted and [r["phase"] for r in first.history][-2:] == ["refine", "refine"]
    resumed = adc.search(trained, digits_input, out=tmp_path, resume=True, **common)
    straight = adc.search(trained, digits_input, **common)
    assert [r["phase"] for r in straight.history][5:] == ["refine"] * 5
    assert [r["policy"] for r in resumed.history] == [r["policy"] for r in straight.history]
    assert [r["reward"] for r in resumed.history] == [r["reward"] for r in straight.history]
    for record in straight.history:
        assert record["budget_use"]["flops"] <= 1.0 + 1e-9
    refined = {json.dumps(r["policy"], sort_keys=True) for r in straight.history[5:]}
    assert len(refined) > 1  # the refinement explores distinct policies around the best one


@pytest.mark.parametrize("episodes, workers, plan", [(200, 2, (120, 20, 60)), (100, 1, (60, 10, 30)),
                                                     (20, 4, (12, 4, 4))])
def test_a_learning_agent_refines_for_three_tenths_by_cmaes_by_default(episodes, workers, plan):
    """The defaults benchmark v2 measured best for ddpg (v2_ddpg-refine-cma-60.md); explore and exploit in whole rounds."""
    assert loop_module.phase_plan(episodes, workers, True, None, None) == plan
    assert loop_module.phase_plan(episodes, workers, False, None, None) == (episodes, 0, 0)
    assert adc.SearchOptions().refine_method == "cmaes"


def test_an_unknown_refine_method_is_refused_with_the_choices():
    with pytest.raises(AdcError, match="refine_method 'newton': valid: gaussian, cmaes"):
        adc.SearchOptions(refine_method="newton")


@pytest.mark.parametrize("agent", ["random", "cmaes", "tpe"])
def test_an_abrupt_stop_keeps_the_last_exact_checkpoint(agent, trained, digits, digits_input, tmp_path):
    """A second Ctrl-C (or a kill) mid-round: the checkpoint stays at the last round end, and resume still matches."""
    common = dict(data=digits, budget={"flops": 0.5}, agent=agent, episodes=5, seed=1, checkpoint_every=2, **FAST)

    def stop_now_at_3(record, best):
        if record["episode"] == 2:
            raise KeyboardInterrupt

    first = adc.search(trained, digits_input, out=tmp_path, progress=stop_now_at_3, **common)
    assert first.interrupted and len(first.history) == 3
    assert len(Checkpoint(tmp_path / "checkpoint").history()) == 2
    resumed = adc.search(trained, digits_input, out=tmp_path, resume=True, **common)
    straight = adc.search(trained, digits_input, **common)
    assert [r["policy"] for r in resumed.history] == [r["policy"] for r in straight.history]


def test_resume_refuses_changed_settings(trained, digits, digits_input, tmp_path):
    common = dict(data=digits, budget={"flops": 0.5}, agent="random", episodes=3, seed=1, checkpoint_every=1, **FAST)
    adc.search(trained, digits_input, out=tmp_path, **common)
    with pytest.raises(AdcError, match="--seed 2 differs"):
        adc.search(trained, digits_input, out=tmp_path, resume=True, **{**common, "seed": 2})


def test_resume_refuses_a_checkpoint_of_an_earlier_default_refinement(trained, digits, digits_input, tmp_path):
    """A checkpoint records the refinement's length resolved, so a search begun under an earlier default (a tenth,
    before 2026-11-29) is refused rather than resumed into a different phase plan."""
    common = dict(data=digits, budget={"flops": 0.5}, agent="ddpg", episodes=10, seed=1, checkpoint_every=2,
                  agent_options={"warmup": 2, "hidden": (16, 16)}, **FAST)

    def stop_at_4(record, best):
        if record["episode"] == 3:
            raise KeyboardInterrupt

    adc.search(trained, digits_input, out=tmp_path, progress=stop_at_4, **common)
    saved = tmp_path / "checkpoint" / "state" / "settings.json"
    settings = json.loads(saved.read_text())
    assert settings["refine_episodes"] == 3
    adc.search(trained, digits_input, out=tmp_path, resume=True, progress=stop_at_4, **{**common, "refine_episodes": 3})
    saved.write_text(json.dumps({**settings, "refine_episodes": None}))
    with pytest.raises(AdcError, match="--refine-episodes 3 differs from the interrupted search's None"):
        adc.search(trained, digits_input, out=tmp_path, resume=True, **common)
    random = {**common, "agent": "random", "agent_options": {}}  # no refinement: nothing to refuse
    adc.search(trained, digits_input, out=tmp_path / "random", progress=stop_at_4, **random)
    assert json.loads((tmp_path / "random" / "checkpoint" / "state" / "settings.json").read_text())["refine_episodes"] is None


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(AdcError, match="nothing to resume"):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, agent="random", episodes=2,
                   out=tmp_path, resume=True, **NO_CALIBRATION)


def test_an_exception_in_progress_is_not_swallowed(tmp_path):
    def boom(record, best):
        raise Stop

    with pytest.raises(Stop):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, agent="random", episodes=2, progress=boom,
                   **NO_CALIBRATION)


# -- refusals before the search spends any time ----------------------------------------


def refused(reward=None, budget=("flops=0.5",), **kwargs) -> str:
    """Run a search that must be refused; return the message. Asserts no episode was played."""
    episodes = []
    with pytest.raises(AdcError) as err:
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, budget=list(budget), agent="random",
                   episodes=3, reward=reward or "acc", progress=lambda r, b: episodes.append(r),
                   **{**NO_CALIBRATION, **kwargs})
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
                        reward=f"{tmp_path}/rew.py:fn", **NO_CALIBRATION)
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
    with pytest.raises(AdcError, match="--episodes 0"):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, episodes=0)
    with pytest.raises(AdcError, match="--episodes 'ten': must be an integer"):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, episodes="ten")
    if not torch.cuda.is_available():
        assert "not available" in refused(device="cuda")
    assert "unknown criterion 'nope'" in refused(criterion="nope")
    with pytest.raises(AdcError, match="top1"):
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=lambda m: {"acc": 1.0}, agent="random", episodes=1,
                   **NO_CALIBRATION)


def test_search_result_history_is_json_serialisable(tmp_path):
    result = adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, agent="random", episodes=2,
                        out=tmp_path, checkpoint_every=1, **NO_CALIBRATION)
    saved = Checkpoint(tmp_path / "checkpoint").history()
    assert [r["policy"] for r in saved] == [r["policy"] for r in result.history]
    assert all(math.isfinite(r["wall_time"]) for r in saved)
    assert np.isfinite([r["reward"] for r in saved]).all()


# -------------------------------------------------------------- final selection


class _Task:
    """Just what select_on_holdout uses: units, a recorder, the reward and its label."""

    def __init__(self) -> None:
        self.units = [type("U", (), {"name": n})() for n in ("a", "b")]
        self.recorder = type("R", (), {"record": staticmethod(lambda kept, metrics: dict(metrics))})()
        self.reward_fn = lambda record: record["top1"]
        self.label = "reward 'acc'"


def test_final_selection_rescores_the_best_distinct_policies():
    rewards = [0.5, 0.9, 0.9, 0.8, 0.7, 0.1]
    kept = [(1, 1), (2, 2), (2, 2), (3, 3), (4, 4), (5, 5)]  # episodes 1 and 2 are the same policy
    history = [{"episode": i, "reward": r, "kept": {"a": k[0], "b": k[1]}} for i, (r, k) in enumerate(zip(rewards, kept))]
    holdout = {2: 0.6, 3: 0.95, 4: 0.7}  # the search's top policy is not the best on held-out images
    scored_together = []

    def evaluate(kepts):
        scored_together.append(len(kepts))
        return [Evaluation({"top1": holdout[int(k[0])]}, 0.0, 0.0) for k in kepts]

    selection = select_on_holdout(_Task(), evaluate, history, top=3)
    assert [c["episode"] for c in selection] == [3, 4, 1]
    assert [c["holdout_reward"] for c in selection] == [0.95, 0.7, 0.6]
    assert selection[0]["reward"] == 0.8
    assert scored_together == [3]  # all candidates in one call: workers score them at once
    assert select_on_holdout(_Task(), evaluate, history[:1], top=3) == []


def test_search_keeps_the_policy_the_final_selection_chose(trained, digits, digits_input, monkeypatch, tmp_path):
    monkeypatch.setattr(adc.engine.evaluation, "MIN_HOLDOUT", 50)  # digits has a small validation split
    result = adc.search(trained, digits_input, data=digits, budget={"flops": 0.5}, agent="random", episodes=6, seed=0,
                        bn_calibration=128, val_size=60, select_top=4, select_size=200)
    assert 2 <= len(result.selection) <= 4
    chosen = result.history[result.selection[0]["episode"]]
    assert result.episode == chosen["episode"] and result.policy == chosen["policy"] and result.reward == chosen["reward"]
    holdout = [c["holdout_reward"] for c in result.selection]
    assert holdout == sorted(holdout, reverse=True)
    ranked = sorted(result.history, key=lambda r: r["reward"], reverse=True)
    assert result.selection[0]["episode"] in [r["episode"] for r in ranked[:4]]
    from adc.run.report import write_report

    text = write_report(tmp_path / "report.md", result=result, settings={},
                        counted={"flops": 1.0, "params": 1.0}).read_text()
    assert f"- result: episode {result.episode}," in text
    assert f"final selection: the {len(result.selection)} best distinct policies" in text
    off = adc.search(trained, digits_input, data=digits, budget={"flops": 0.5}, agent="random", episodes=6, seed=0,
                     bn_calibration=128, val_size=60, select_top=0)
    assert off.selection == [] and off.reward == max(r["reward"] for r in off.history)


# -- the Python API with ordinary PyTorch data (issue 9, item 1) -------------------------


def val_top1(digits):
    images = torch.stack([x for x, _ in digits.val])
    labels = torch.tensor([y for _, y in digits.val])

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            return (model(images).argmax(1) == labels).float().mean().item()

    return evaluate


@pytest.mark.parametrize("form", ["DataLoader", "Dataset", "tensor"])
def test_calibration_from_ordinary_pytorch_data_makes_a_useful_model(form, make_trained, digits, digits_input):
    train = digits.train
    calibration = {"DataLoader": torch.utils.data.DataLoader(train, batch_size=32, shuffle=True),
                   "Dataset": train, "tensor": torch.stack([train[i][0] for i in range(300)])}[form]
    model = make_trained()
    result = adc.search(model, digits_input, evaluate=val_top1(digits), calibration=calibration, budget={"flops": 0.5},
                        agent="random", episodes=3, bn_calibration=256)
    small = result.prune(model)
    test_top1 = adc.evaluate(small, digits.test)["top1"]
    assert test_top1 > 0.7, test_top1  # without calibration the same search handed back a chance-level model
    assert result.calibration["bn_images"] == 256
    assert result.calibration["reconstruct"] is True  # training images given: reconstruction on by default
    assert result.calibration["calibration_images"] > 0


def test_a_shuffled_loader_still_gives_the_same_search(make_trained, digits, digits_input):
    loader = torch.utils.data.DataLoader(digits.train, batch_size=32, shuffle=True)
    runs = [adc.search(make_trained(), digits_input, evaluate=val_top1(digits), calibration=loader, agent="random",
                       episodes=2, bn_calibration=64, seed=4) for _ in range(2)]
    assert [r["reward"] for r in runs[0].history] == [r["reward"] for r in runs[1].history]


def test_evaluate_without_calibration_is_refused_with_how_to_pass_it(trained, digits_input, digits):
    with pytest.raises(AdcError) as err:
        adc.search(trained, digits_input, evaluate=val_top1(digits), agent="random", episodes=2)
    message = str(err.value)
    assert "calibration=" in message and "bn_calibration=0, reconstruct=False" in message and "\n" not in message


def test_explicit_opt_out_searches_without_training_images(trained, digits_input, digits):
    result = adc.search(trained, digits_input, evaluate=val_top1(digits), agent="random", episodes=2, **NO_CALIBRATION)
    assert result.calibration["bn_images"] == 0 and result.calibration["reconstruct"] is False
    assert "none" in result.calibration["source"]


@pytest.mark.parametrize("returned, fragment", [
    ("high", "returned str"),
    ({"acc": 0.5}, "without 'top1'"),
    (None, "returned NoneType"),
    (90.0, "fraction in [0, 1]"),
    (float("nan"), "fraction in [0, 1]"),
])
def test_evaluate_returning_something_else_is_one_line(returned, fragment):
    with pytest.raises(AdcError) as err:
        adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=lambda m: returned, agent="random", episodes=1,
                   **NO_CALIBRATION)
    message = str(err.value)
    assert fragment in message and "\n" not in message and "evaluate" in message


def test_evaluate_may_return_a_float(trained, digits_input, digits):
    result = adc.search(trained, digits_input, evaluate=val_top1(digits), agent="random", episodes=1, **NO_CALIBRATION)
    assert set(result.metrics) >= {"top1", "flops", "flops_ratio"} and "top5" not in result.metrics


# -- plug-ins that fail in the middle of a search (issue 9, item 5) -----------------------


def late_failing_reward(tmp_path, body: str) -> str:
    """A reward plug-in that is fine on the unpruned model and the first episode, then ``body``."""
    (tmp_path / "late.py").write_text(
        "calls = 0\n"
        "def fn(m):\n"
        "    global calls\n"
        "    calls += 1\n"
        "    if calls <= 2:\n"
        "        return m['top1']\n"
        f"    {body}\n")
    return f"{tmp_path}/late.py:fn"


@pytest.mark.parametrize("body, fragment", [
    ("return float('nan')", "finite"),
    ("return 'high'", "must return a float"),
    ("raise RuntimeError('boom')", "RuntimeError: boom"),
])
def test_a_reward_failing_mid_search_stops_it_with_one_line_and_keeps_the_episodes_before(body, fragment, tmp_path):
    spec = late_failing_reward(tmp_path, body)
    result = adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=stub_evaluate, agent="random", episodes=4,
                        reward=spec, **NO_CALIBRATION)
    assert result.interrupted and result.failure is not None
    assert fragment in result.failure and "episode 1" in result.failure and "\n" not in result.failure
    assert len(result.history) == 1  # the good episode is kept; nothing after the failure entered
    assert all(math.isfinite(r["reward"]) for r in result.history)


def test_an_evaluate_raising_mid_search_stops_it_with_one_line(tmp_path):
    calls = []

    def flaky(model):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("disk went away")
        return 0.5

    result = adc.search(tiny_model(), torch.zeros(1, 1, 8, 8), evaluate=flaky, agent="random", episodes=4,
                        **NO_CALIBRATION)
    assert result.failure is not None and "evaluate failed: ValueError: disk went away" in result.failure
    assert len(result.history) == 1


@pytest.mark.parametrize("criterion", sorted(DATA_CRITERIA))
def test_the_search_gives_data_criteria_their_calibration_batches(criterion, trained, digits, digits_input):
    result = adc.search(trained, digits_input, data=digits, budget={"flops": 0.5}, agent="uniform", episodes=1,
                        criterion=criterion, reconstruct=False, **FAST)
    assert result.calibration["criterion"] == criterion and result.calibration["calibration_images"] > 0
    assert result.metrics["flops_ratio"] <= 0.5 + 1e-9


@pytest.mark.parametrize("criterion", sorted(LABEL_CRITERIA))
def test_label_criteria_refuse_unlabelled_calibration_images(criterion, trained, digits, digits_input):
    images = torch.stack([x for x, _ in digits.train][:64])
    with pytest.raises(AdcError, match=f"criterion '{criterion}' needs labelled calibration data") as excinfo:
        adc.search(trained, digits_input, evaluate=stub_evaluate, calibration=images, agent="uniform", episodes=1,
                   criterion=criterion)
    assert "\n" not in str(excinfo.value)
