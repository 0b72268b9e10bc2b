"""``--iterations``: search and prune in steps toward the budget, each step from the last step's model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import adc
from adc.analysis.cost import count
from adc.analysis.graph import analyze
from adc.inputs.models import build_model, load_checkpoint
from adc.objective.budgets import BudgetSpec, parse_budget
from adc.run.config import RunConfig
from adc.run.iterative import run_iterations, step_budgets
from adc.utils.errors import AdcError

FAST = {"bn_calibration": 64, "val_size": 100, "select_top": 0}


def test_step_budgets_are_geometric_toward_the_final_budget_against_the_original():
    originals = {"flops": 1000.0, "params": 50.0}
    specs = [parse_budget("flops=0.25"), parse_budget("params=20")]
    steps = [step_budgets(specs, originals, k, 2) for k in (1, 2)]
    assert [b.value for b in steps[0]] == pytest.approx([500.0, 50.0 * 0.4 ** 0.5])
    assert [b.value for b in steps[1]] == pytest.approx([250.0, 20.0])
    assert all(not b.relative for step in steps for b in step)
    assert parse_budget(str(steps[0][0])) == BudgetSpec("flops", 500.0, False)  # what a step's config.toml holds
    with pytest.raises(AdcError, match="latency is unknown"):
        step_budgets([parse_budget("latency=0.5")], originals, 1, 2)


@pytest.fixture(scope="module")
def iterative_run(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("iterative") / "run"
    config = RunConfig.from_values({"checkpoint": str(trained_checkpoint), "budget": ["flops=0.3"], "agent": "random",
                                    "episodes": 2, "iterations": 3, "iteration_finetune": 1, **FAST})
    return run_iterations(config, out=out), out


def test_iterations_meet_the_final_budget_counted_on_the_final_model(iterative_run, trained_checkpoint, digits_input):
    run, out = iterative_run
    original = load_checkpoint(build_model("zoo:plain20", num_classes=10, in_channels=1), trained_checkpoint).eval()
    final = adc.load(out / "model.pt")
    counted, base = count(final, digits_input), count(original, digits_input)
    assert counted.flops <= 0.3 * base.flops
    assert counted.flops >= 0.28 * base.flops  # each step uses its budget
    assert run.final["flops_ratio"] == pytest.approx(counted.flops / base.flops)
    # every step pruned further, each under its own interpolated budget, against the original
    ratios = []
    for k in (1, 2, 3):
        step = count(adc.load(out / f"step{k}" / "model.pt"), digits_input).flops / base.flops
        assert step <= 0.3 ** (k / 3) + 1e-9
        ratios.append(step)
    assert ratios[0] > ratios[1] > ratios[2]
    assert [s["budget_of_original"]["flops"] for s in run.steps] == pytest.approx([0.3 ** (1 / 3), 0.3 ** (2 / 3), 0.3])


def test_each_step_starts_from_the_previous_steps_fine_tuned_model(iterative_run):
    run, out = iterative_run
    for k in (2, 3):
        settings = (out / f"step{k}" / "config.toml").read_text()
        assert str(out / f"step{k - 1}" / "model_finetuned.pt") in settings
    assert not (out / "step3" / "model_finetuned.pt").exists()  # no fine-tune after the last step
    assert [("finetune" in s) for s in run.steps] == [True, True, False]


def test_the_final_model_is_numbered_as_the_original_and_can_be_traced_again(iterative_run, digits_input):
    _, out = iterative_run
    final = adc.load(out / "model.pt")
    policy = json.loads((out / "policy.json").read_text())
    graph = analyze(build_model("zoo:plain20", num_classes=10, in_channels=1), digits_input)
    assert set(policy["kept"]) == {u.name for u in graph.units}
    assert {u: len(v) for u, v in final.adc_pruning["kept"].items()} == {
        u: k for u, k in policy["kept"].items() if k < graph.unit(u).channels}
    again = analyze(final, digits_input)  # a pruned model is re-analysable (what the next step does)
    assert [u.channels for u in again.units] == [policy["kept"][u.name] for u in again.units]
    report = (out / "report.md").read_text()
    assert "| 3 | flops 0.300 |" in report and json.loads((out / "iterations.json").read_text())["final"]


def test_resume_skips_finished_steps(iterative_run, trained_checkpoint):
    run, out = iterative_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("step*/model.pt")}
    config = RunConfig.from_file(out)
    again = run_iterations(config, out=out, resume=True)
    assert {p: p.stat().st_mtime_ns for p in out.glob("step*/model.pt")} == before
    assert again.final["flops_ratio"] == pytest.approx(run.final["flops_ratio"])


def test_a_fresh_run_into_a_folder_with_steps_is_refused(iterative_run):
    _, out = iterative_run
    with pytest.raises(AdcError, match="already holds iterative steps"):
        run_iterations(RunConfig.from_file(out), out=out)


def test_pruning_a_pruned_model_composes_the_kept_channels(trained, digits_input, tmp_path):
    graph = analyze(trained, digits_input)
    once = adc.prune(trained, digits_input, {u.name: 0.5 for u in graph.units})
    graph_once = analyze(once, digits_input)
    twice = adc.prune(once, digits_input, {u.name: 0.5 for u in graph_once.units})
    adc.save(twice, tmp_path / "twice.pt")
    loaded = adc.load(tmp_path / "twice.pt")  # rebuilt from the original spec and the composed kept channels
    x = torch.randn(4, *digits_input.shape[1:])
    with torch.no_grad():
        assert torch.allclose(loaded(x), twice(x), atol=1e-5)
    for u in graph_once.units:
        kept_once, kept_twice = once.adc_pruning["kept"][u.name], twice.adc_pruning["kept"][u.name]
        assert set(kept_twice) <= set(kept_once) and len(kept_twice) == u.kept(0.5)


def test_an_adc_model_file_of_another_architecture_is_refused_as_checkpoint(iterative_run, tmp_path):
    from adc.run.pipeline import run_search

    _, out = iterative_run
    config = RunConfig.from_values({"model": "zoo:resnet20", "checkpoint": str(out / "model.pt"), "agent": "uniform",
                                    "episodes": 1, **FAST})
    with pytest.raises(AdcError, match="is an adc model of 'zoo:plain20'.*not of --model 'zoo:resnet20'") as excinfo:
        run_search(config, out=tmp_path / "x")
    assert "\n" not in str(excinfo.value) and not (tmp_path / "x").exists()
