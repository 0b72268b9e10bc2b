"""From settings to a finished run folder: what ``adc search`` does, as a library call.

:func:`run_search` loads the data and the model (training the embedded
default on first use), runs the search's phases (:class:`adc.engine.loop.Search`),
and writes the run folder (:class:`adc.run.folder.RunFolder`). A search that
a failing plug-in or Ctrl-C stops early still writes its best result so far
before the failure is raised.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adc.analysis.cost import count
from adc.analysis.graph import analyze
from adc.analysis.timers import RUNTIMES, SPEEDUP_TIMING, make_timer, measured_speedup, side_by_side
from adc.engine.callbacks import ProgressCallback, SearchCallback, TensorBoardCallback
from adc.engine.front import point_name
from adc.engine.loop import Search
from adc.engine.evaluation import validation_score
from adc.engine.preflight import preflight
from adc.engine.result import SearchResult
from adc.inputs.data import DataSplits, example_input, load_data
from adc.inputs.models import build_model, load_checkpoint
from adc.inputs.pretrained import DEFAULT_EPOCHS, ensure_trained, is_trained
from adc.inputs.training import evaluate
from adc.objective.budgets import parse_budget
from adc.pruning.serialization import is_model_file, load, save
from adc.run.config import RunConfig
from adc.run.folder import RunFolder
from adc.run.plots import plot_front, plot_policy, plot_rewards
from adc.run.report import write_report
from adc.utils.device import torch_threads
from adc.utils.errors import AdcError
from adc.utils.formatting import one_line


@dataclass
class RunHooks:
    """How a run talks to its caller (the CLI draws progress bars with them); every hook is optional.

    Attributes:
        episode: After every episode, ``(record, best)``.
        status: One-line status messages ("training ...", "writing ...").
        note: Things the user should know (a setting without effect, a skipped step).
        training: ``(batches done, batches in all)`` while a reference model trains.
        table: ``(done, total, layer)`` while a latency table is measured.
    """

    episode: Callable[[dict[str, Any], dict[str, Any]], None] | None = None
    status: Callable[[str], None] | None = None
    note: Callable[[str], None] | None = None
    training: Callable[[int, int], None] | None = None
    table: Callable[[int, int, str], None] | None = None


def load_model(config: RunConfig, splits: DataSplits, hooks: RunHooks | None = None) -> nn.Module:
    """Build the model and load its weights (training adc's default on first use, with progress).

    The checkpoint is a state dict, or a model file of :func:`adc.save` -- a
    pruned model (a search's ``model.pt``, searched again: iterative pruning)
    or a sparse-trained one (``adc finetune --model ... --out DIR``).
    """
    hooks = hooks or RunHooks()
    model = build_model(config.model, num_classes=splits.num_classes, in_channels=splits.in_channels)
    if config.checkpoint and is_model_file(config.checkpoint):
        return _load_model_file(config, model)
    if config.checkpoint:
        return load_checkpoint(model, config.checkpoint)
    if config.model.startswith("zoo:"):
        if not is_trained(config.model, config.data, epochs=DEFAULT_EPOCHS) and hooks.status:
            hooks.status(f"training {config.model} on {config.data} (first use; cached afterwards)")
        path = ensure_trained(config.model, config.data, epochs=DEFAULT_EPOCHS, seed=0, batch_progress=hooks.training)
        return load_checkpoint(model, path)
    if config.model.startswith("torchvision:"):
        raise AdcError(f"model {config.model!r} has no trained weights here: pass --checkpoint FILE (a state dict)")
    return model  # a plugin builds its own trained model


def _load_model_file(config: RunConfig, built: nn.Module) -> nn.Module:
    """A checkpoint written by :func:`adc.save` (a pruned or sparse-trained model): rebuilt with its own
    architecture, which must be the one ``--model`` and the data build."""
    assert config.checkpoint is not None
    loaded = load(config.checkpoint)
    mine, theirs = built.adc_model_spec, getattr(loaded, "adc_model_spec", {})
    if mine != theirs:
        raise AdcError(f"--checkpoint {config.checkpoint!r} is an adc model of {theirs.get('spec')!r} with "
                       f"{theirs.get('num_classes')} classes and {theirs.get('in_channels')} input channels, not of "
                       f"--model {config.model!r} with {mine['num_classes']} and {mine['in_channels']}")
    return loaded


def _trains_first(config: RunConfig) -> bool:
    """Whether loading the model means training adc's default first (a zoo model not yet cached)."""
    return (not config.checkpoint and config.model.startswith("zoo:")
            and not is_trained(config.model, config.data, epochs=DEFAULT_EPOCHS))


def check_before_training(config: RunConfig, splits: DataSplits, x: torch.Tensor) -> None:
    """The budgets and the reward checked on the untrained architecture, before minutes of training.

    A trace without trial pruning (``verify=False``) may list more units than the trained model's
    analysis keeps, which only makes budgets easier to reach: what it refuses, the real search would
    refuse too. The reward is checked on the untrained model's record (its accuracy is near chance).
    """
    o = config.search
    model = build_model(config.model, num_classes=splits.num_classes, in_channels=splits.in_channels).eval()
    graph = analyze(model, x, verify=False)
    graph.require_units()
    points = o.front.points() if o.front else [None]
    preflight(graph, o, model, validation_score(splits, o), source="validation", points=points)


def default_out() -> Path:
    """``runs/<date>-<time>``."""
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def run_search(config: RunConfig, *, out: str | Path | None = None, resume: bool = False,
               hooks: RunHooks | None = None) -> tuple[SearchResult, RunFolder]:
    """Run a whole search and write its folder.

    Args:
        config: The settings.
        out: The run folder (default ``runs/<time>``); with ``resume``, the folder to continue.
        resume: Continue the search checkpointed in ``out``; its settings must not change.
        hooks: Progress and messages.

    Returns:
        The result and the run folder.

    Raises:
        AdcError: a bad setting or input (before any episode: no run folder is left behind),
            or a failure during the search (after the best result so far was written).
    """
    hooks = hooks or RunHooks()
    folder = RunFolder(out if out is not None else default_out())
    if resume:
        saved = folder.read_config() if folder.config.is_file() else None
        changed = saved.changed(config) if saved is not None else []
        if changed:
            raise AdcError(f"--resume {folder}: {changed[0]} differs from the interrupted search's settings; "
                           "a resumed search keeps its settings (drop the flag)")
    fresh = folder.prepare(resume=resume)
    try:
        with torch_threads(config.search.threads):
            return _run(config, folder, resume=resume, hooks=hooks)
    except AdcError:
        if fresh and not folder.checkpoint.exists() and not folder.model.exists():
            folder.remove()  # refused before any episode: leave no half-made run folder
        raise


def _run(config: RunConfig, folder: RunFolder, *, resume: bool, hooks: RunHooks) -> tuple[SearchResult, RunFolder]:
    started = time.perf_counter()
    splits = load_data(config.data)
    x = example_input(splits)
    if _trains_first(config):
        check_before_training(config, splits, x)
    model = load_model(config, splits, hooks)
    callbacks: list[SearchCallback] = [ProgressCallback(hooks.episode, hooks.note)]
    if config.tensorboard:
        callbacks.append(TensorBoardCallback(folder.tensorboard))
    with Search(model, x, config.search, data=splits, out=folder.path, resume=resume, table_progress=hooks.table,
                callbacks=callbacks) as search:
        search.build()
        if not resume:
            folder.write_config(config)
        search.play()
        search.select()
        result = search.result()
    if hooks.status:
        hooks.status(f"writing {folder}")
    write_outputs(folder, result, model, x, splits, config, time.perf_counter() - started)
    if result.failure:
        raise AdcError(f"the search stopped at {result.failure}; the best result of the {len(result.history)} "
                       f"episodes before it is in {folder}")
    return result, folder


THROUGHPUT_BATCH = 32
"""The second batch of the measured speedups when the search's latency batch is 1."""


def speed_batches(latency_batch: int) -> list[tuple[int, str]]:
    """Batch 1, and the search's latency batch (or a throughput batch when that is 1), each with what it is."""
    if latency_batch > 1:
        return [(1, "batch 1"), (latency_batch, "the search's latency batch")]
    return [(1, "batch 1, the search's latency batch"), (THROUGHPUT_BATCH, "a throughput batch")]


def measure_speedups(model: nn.Module, pruned: nn.Module, x: torch.Tensor, config: RunConfig) -> list[dict[str, Any]]:
    """Measured speedups of the saved model for the report: torch and onnxruntime, at batch 1 and a larger batch.

    Each is timed side by side with the unpruned model in this process (:func:`measured_speedup`).
    An entry that cannot be measured (onnxruntime not installed, say) holds ``error`` instead.
    """
    o = config.search
    speeds = []
    original = copy.deepcopy(model).cpu()
    for runtime in RUNTIMES:
        device = o.device if runtime == "torch" else "cpu"
        timer = None
        for batch, kind in speed_batches(o.latency_batch):
            try:
                # One timer per runtime: onnxruntime exports each model once for both batches.
                timer = timer or make_timer(runtime, device, o.threads, **SPEEDUP_TIMING)
                speeds.append({**measured_speedup(original if device == "cpu" else model, pruned, x, batch=batch,
                                                  timer=timer), "kind": kind})
            except Exception as exc:  # an optional report line: never lose the finished search over it
                speeds.append({"error": one_line(exc), "runtime": runtime, "batch": batch, "kind": kind})
    return speeds


def write_front(folder: RunFolder, result: SearchResult, model: nn.Module, x: torch.Tensor, splits: DataSplits | None,
                config: RunConfig) -> list[dict[str, Any]]:
    """Save every point's model (``front/<budget>.pt``), and ``front.md``, ``front.csv``, ``front.png``.

    The points' latencies are measured side by side with the unpruned model, all in one call, in the search's
    runtime at its latency batch.
    """
    o = config.search
    assert o.front is not None
    device = str(next(model.parameters()).device)
    models = []
    rows = []
    for point in result.front:
        pruned = point.prune()
        test = evaluate(pruned, splits.test, device=device)["top1"] if splits is not None else None
        pruned_cpu = pruned.to("cpu")
        name = point_name(parse_budget(str(point.point)))
        path = folder.front_model(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        save(pruned_cpu, path, policy=point.policy, meta={"metrics": point.metrics, "original": point.original,
                                                          "budget": point.budget, "test_top1": test,
                                                          "example_shape": list(x.shape), "settings": config.values()})
        hold = point.measured_latency
        models.append(pruned_cpu)
        rows.append({"budget": point.point, "episode": point.episode, "val_top1": point.metrics["top1"],
                     "test_top1": test, "flops_ratio": point.metrics["flops_ratio"],
                     "params_ratio": point.metrics["params_ratio"],
                     "predicted_latency_ratio": point.metrics.get("latency_ratio"),
                     "holds": None if hold is None else bool(hold["holds"]), "model": f"{path.parent.name}/{path.name}",
                     f"{o.front.key}_ratio": point.metrics.get(f"{o.front.key}_ratio")})
    try:
        timer = make_timer(o.runtime, o.device, o.threads, statistic="min")
        xb = x[:1].to("cpu").expand(o.latency_batch, *x.shape[1:]).contiguous()
        timed = side_by_side(timer, copy.deepcopy(model).to("cpu"), models, xb, rounds=3)
        for row, ratio in zip(rows, timed.ratios):
            row["measured_latency_ratio"], row["measured_speedup"] = ratio, 1.0 / ratio
    except Exception as exc:  # optional columns: never lose the finished search over them
        result.notes.append(f"the front's latencies were not measured: {one_line(exc)}")
    folder.write_front(rows, runtime=o.runtime, batch=o.latency_batch)
    plot_front(folder.front_plot, rows, key=o.front.key)
    return rows


def write_outputs(folder: RunFolder, result: SearchResult, model: nn.Module, x: torch.Tensor, splits: DataSplits | None,
                  config: RunConfig, wall_time: float) -> None:
    """Save the chosen pruned model and every report file into the run folder."""
    pruned = result.prune()
    device = next(model.parameters()).device
    test = None
    if splits is not None:
        test = {"original": evaluate(model, splits.test, device=str(device))["top1"],
                "pruned": evaluate(pruned, splits.test, device=str(device))["top1"]}
    pruned_cpu = pruned.to("cpu")
    counted = count(pruned_cpu, x.to("cpu"))
    settings = config.values()
    meta = {"metrics": result.metrics, "original": result.original, "test_top1": test, "counted": counted._asdict(),
            "settings": settings, "example_shape": list(x.shape)}
    save(pruned_cpu, folder.model, policy=result.policy, meta=meta)
    front = write_front(folder, result, model, x, splits, config) if result.front else []
    folder.write_policy({"policy": result.policy, "kept": result.kept, "reward": result.reward, "metrics": result.metrics,
                         "episode": result.episode, "budget": result.budget, "selection": result.selection,
                         "test_top1": test, "interrupted": result.interrupted, "failure": result.failure,
                         "notes": result.notes, "calibration": result.calibration, "round_to": result.round_to,
                         "alignment": result.alignment, "latency_hold": result.latency_hold, "front": front})
    folder.write_history(result.history)
    plot_policy(folder.file("policy.png"), result.graph, result.kept)
    plot_rewards(folder.file("reward.png"), result.history)
    speeds = measure_speedups(model, pruned_cpu, x, config)
    write_report(folder.file("report.md"), result=result, settings=settings, counted=counted._asdict(), test=test,
                 wall_time=wall_time, speeds=speeds, front=front)
