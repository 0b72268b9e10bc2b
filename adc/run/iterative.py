"""``--iterations N``: search and prune in N steps toward the budget, each step from the last step's model.

One-shot pruning to a tight budget asks one search to find everything at
once; iterative pruning approaches it in steps (prune, recover, prune again,
as in Han et al.'s prune-retrain cycles or NetAdapt). Step ``k`` of ``N``
searches the model step ``k - 1`` returned -- fine-tuned for
``iteration_finetune`` epochs first, when asked -- under the geometric
interpolation toward the final budget, expressed against the ORIGINAL
model's cost: ``original x f^(k/N)`` for a final fraction ``f``. Every step
then removes the same fraction of what is left, and the last one meets the
final budget as a one-shot search would (it is met by construction: each
step's search meets its budget, and step ``N``'s is the final one).

The run folder holds ``config.toml`` (every setting), ``step1`` ... ``stepN``
(each a complete search folder whose ``config.toml`` reruns that step),
and at the top the final model ``model.pt`` (its kept channels numbered as in
the original architecture, so :func:`adc.load` rebuilds it from the spec),
``policy.json`` (sparsity and kept channels per unit of the original model),
``iterations.json`` and ``report.md``. ``--resume`` skips the finished steps
and resumes the unfinished one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adc.analysis.cost import count
from adc.analysis.graph import analyze
from adc.inputs.data import DataSplits, example_input, load_data
from adc.inputs.training import evaluate
from adc.objective.budgets import BUDGET_METRICS, BudgetSpec
from adc.pruning.pruner import PRUNING_ATTR, check_pruned
from adc.pruning.serialization import load, save
from adc.run.config import RunConfig
from adc.run.finetune_run import finetune_run
from adc.run.folder import RunFolder
from adc.run.pipeline import RunHooks, default_out, load_model, run_search
from adc.utils.device import torch_threads
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write_text

ITERATIONS_FILE = "iterations.json"


def step_folder(top: RunFolder, k: int) -> RunFolder:
    """The folder of step ``k`` (from 1)."""
    return RunFolder(top.file(f"step{k}"))


def step_budgets(specs: Sequence[BudgetSpec], originals: Mapping[str, float], k: int, n: int) -> list[BudgetSpec]:
    """The budgets of step ``k`` of ``n``: ``original x f^(k/n)`` per budget, absolute (the original's units).

    Args:
        specs: The final budgets, as given (fractions or absolute amounts).
        originals: The original model's value of every budget key.
    """
    steps = []
    for spec in specs:
        if spec.key not in originals:
            raise AdcError(f"--iterations: the original model's {spec.key} is unknown, so budget {spec} cannot be "
                           "interpolated; give it as a fraction (latency=0.5)")
        fraction = spec.value if spec.relative else spec.value / originals[spec.key]
        steps.append(BudgetSpec(spec.key, originals[spec.key] * fraction ** (k / n), relative=False))
    return steps


def original_costs(model: nn.Module, x: torch.Tensor, config: RunConfig) -> dict[str, float]:
    """The original model's value of every analytic budget metric (latency comes from the first step's search)."""
    graph = analyze(model, x)
    keys = {b.key for b in config.search.budgets} - {"latency"}
    return {key: float(BUDGET_METRICS.get(key)(graph, energy_model=config.search.energy)(graph.channels)) for key in keys}


@dataclass
class IterativeResult:
    """What an iterative run did.

    Attributes:
        steps: One summary per step (budgets, accuracies, costs against the original).
        final: The final model's summary (counted costs against the original, accuracies).
        folder: The run folder.
    """

    steps: list[dict[str, Any]]
    final: dict[str, Any]
    folder: RunFolder


def _prepare(top: RunFolder, config: RunConfig, resume: bool) -> None:
    if resume:
        saved = top.read_config() if top.config.is_file() else None
        changed = saved.changed(config) if saved is not None else []
        if saved is None or changed:
            why = changed[0] + " differs from the interrupted run's settings" if changed else "no config.toml there"
            raise AdcError(f"--resume {top}: {why}; a resumed run keeps its settings")
        return
    if top.path.is_dir() and any(top.path.glob("step*")):
        raise AdcError(f"--out {str(top.path)!r} already holds iterative steps; choose another folder or --resume it")
    top.prepare(resume=False)
    top.write_config(config)


def run_iterations(config: RunConfig, *, out: str | Path | None = None, resume: bool = False,
                   hooks: RunHooks | None = None) -> IterativeResult:
    """Search and prune in ``config.iterations`` steps; write the run folder (see the module docs).

    Raises:
        AdcError: a bad setting, a budget that cannot be interpolated, or a step that fails
            (the finished steps stay; ``--resume`` continues).
    """
    hooks = hooks or RunHooks()
    n = config.iterations
    top = RunFolder(out if out is not None else default_out())
    _prepare(top, config, resume)
    started = time.perf_counter()
    with torch_threads(config.search.threads):
        splits = load_data(config.data)
        x = example_input(splits)
        original = load_model(config, splits, hooks)
        originals = original_costs(original, x, config)
    source, steps = config.checkpoint, []
    for k in range(1, n + 1):
        record, source = _step(top, config, originals, source, k, hooks)
        if k == 1:  # a latency budget's original is the first search's measured-table prediction
            originals.update({key: record["original"][key] for key in ("latency",) if key in record["original"]})
        steps.append(record)
        _write_iterations(top, steps, None)
    final = _finish(top, config, original, x, splits, steps, time.perf_counter() - started)
    return IterativeResult(steps, final, top)


def _step(top: RunFolder, config: RunConfig, originals: dict[str, float], source: str | None, k: int,
          hooks: RunHooks) -> tuple[dict[str, Any], str]:
    """Run (or, on resume, find) step ``k``; its summary and the checkpoint the next step starts from."""
    n, folder = config.iterations, step_folder(top, k)
    budgets = step_budgets(config.search.budgets, originals, k, n)
    if not folder.model.is_file():
        step_config = config.with_values({"budget": [str(b) for b in budgets], "checkpoint": source, "iterations": 1,
                                          "iteration_finetune": 0})
        if hooks.status:
            hooks.status(f"step {k}/{n}: {', '.join(str(b) for b in budgets)} "
                         f"({', '.join(f'{b.key} {b.value / originals[b.key]:.3f}' for b in budgets if b.key in originals)} "
                         "of the original)")
        run_search(step_config, out=folder.path, resume=folder.checkpoint.exists(), hooks=_offset(hooks, k, config))
    chosen = json.loads(folder.file("policy.json").read_text())
    metrics = chosen["metrics"]
    record: dict[str, Any] = {
        "step": k, "folder": folder.path.name, "budget": [str(b) for b in budgets],
        "budget_of_original": {b.key: b.value / originals[b.key] for b in budgets if b.key in originals},
        "val_top1": metrics["top1"], "test_top1": (chosen.get("test_top1") or {}).get("pruned"),
        "original": {key[len("original_"):]: v for key, v in metrics.items() if key.startswith("original_")},
        "episodes": len((folder.file("history.csv").read_text().splitlines())) - 1,
    }
    next_source = str(folder.model)
    if config.iteration_finetune and k < n:
        if not folder.finetuned.is_file():
            if hooks.status:
                hooks.status(f"step {k}/{n}: fine-tuning {config.iteration_finetune} epoch(s) before the next step")
            finetune_run(folder.path, epochs=config.iteration_finetune, device=config.search.device,
                         threads=config.search.threads, seed=config.search.seed)
        tuned = folder.read_finetune()
        record["finetune"] = {"epochs": config.iteration_finetune, "test_top1_kept": tuned["test_top1_kept"],
                              "val_top1_kept": tuned["val_top1_kept"], "kept": tuned["kept"]}
        next_source = str(folder.finetuned)
    record["next_checkpoint"] = next_source
    return record, next_source


def _offset(hooks: RunHooks, k: int, config: RunConfig) -> RunHooks:
    """The hooks with episode numbers counted across steps (progress bars run over the whole run)."""
    if hooks.episode is None:
        return hooks
    episode, offset = hooks.episode, (k - 1) * config.search.episodes
    return RunHooks(episode=lambda record, best: episode({**record, "episode": record["episode"] + offset}, best),
                    status=hooks.status, note=hooks.note, training=hooks.training, table=hooks.table)


def _finish(top: RunFolder, config: RunConfig, original: nn.Module, x: torch.Tensor, splits: DataSplits,
            steps: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
    """Check the last step's model against the original's analysis; save it, its policy and the reports at the top."""
    final = load(step_folder(top, len(steps)).model)
    graph = analyze(original, x)
    composed = (getattr(final, PRUNING_ATTR, None) or {}).get("kept", {})
    kept = np.array([len(composed.get(u.name, range(u.channels))) for u in graph.units], dtype=np.float64)
    with torch.no_grad():
        check_pruned(final, graph, kept, x)  # every figure below is true of this model
    counted, base = count(final, x), count(original, x)
    with torch_threads(config.search.threads):
        test = {"original": evaluate(original, splits.test)["top1"], "pruned": evaluate(final, splits.test)["top1"]}
    policy = {u.name: float(1.0 - k / u.channels) for u, k in zip(graph.units, kept)}
    summary = {
        "iterations": len(steps), "test_top1": test,
        "flops_ratio": counted.flops / base.flops, "params_ratio": counted.params / base.params,
        "counted": counted._asdict(), "original_counted": base._asdict(), "wall_time": wall_time,
        "budget": [str(b) for b in config.search.budgets],
    }
    save(final, top.model, policy=policy, meta={**summary, "settings": config.values(), "steps": steps,
                                                "example_shape": list(x.shape)})
    top.write_policy({"policy": policy, "kept": {u.name: int(k) for u, k in zip(graph.units, kept)}, **summary})
    _write_iterations(top, steps, summary)
    _write_report(top, steps, summary)
    return summary


def _write_iterations(top: RunFolder, steps: list[dict[str, Any]], final: dict[str, Any] | None) -> None:
    atomic_write_text(top.file(ITERATIONS_FILE), json.dumps({"steps": steps, "final": final}, indent=2))


def _write_report(top: RunFolder, steps: list[dict[str, Any]], final: dict[str, Any]) -> None:
    def pct(v: float | None) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"

    lines = ["# adc iterative pruning report", "",
             f"Final budget {', '.join(final['budget'])} in {final['iterations']} steps; each step searched the "
             "previous step's model under the geometric interpolation toward it, against the original's cost.", "",
             "| step | budget (of the original) | validation top-1 | test top-1 | test top-1 after fine-tune |",
             "|---:|---|---:|---:|---:|"]
    for s in steps:
        budget = ", ".join(f"{k} {v:.3f}" for k, v in s["budget_of_original"].items())
        lines.append(f"| {s['step']} | {budget} | {pct(s['val_top1'])} | {pct(s['test_top1'])} | "
                     f"{pct((s.get('finetune') or {}).get('test_top1_kept'))} |")
    lines += ["", f"Final model (`model.pt`, counted with FlopCounterMode against the original): FLOPs "
                  f"{final['flops_ratio']:.4f}, params {final['params_ratio']:.4f} of the original; test top-1 "
                  f"{pct(final['test_top1']['original'])} -> {pct(final['test_top1']['pruned'])} (before fine-tuning).",
              "", f"Wall time {final['wall_time']:.1f} s. Every step's search is in its `stepK/` folder."]
    atomic_write_text(top.file("report.md"), "\n".join(lines) + "\n")
