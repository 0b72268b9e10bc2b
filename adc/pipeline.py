"""From settings to a finished run folder: what ``adc search`` does, as a library call.

:class:`SearchConfig` holds every setting of a search (the CLI fills it from
flags or from a ``config.toml``); :func:`run_search` loads the data and the
model (training the embedded default on first use), runs :func:`adc.search.search`
and writes the outputs (:mod:`adc.outputs`).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adc.budgets import parse_budget
from adc.cost import count
from adc.data import DataSplits, example_input, load_data
from adc.errors import AdcError
from adc.models import build_model, load_checkpoint
from adc.outputs import CONFIG_FILE, plot_policy, plot_rewards, read_config, write_config, write_history_csv, write_report
from adc.pretrained import DEFAULT_DATA, DEFAULT_EPOCHS, DEFAULT_MODEL, ensure_trained
from adc.search import CHECKPOINT_DIR, SearchResult, check_device, search
from adc.serialization import atomic_write_text, save
from adc.training import evaluate


@dataclass
class SearchConfig:
    """Every setting of one search; written to ``config.toml`` in the run folder."""

    model: str = DEFAULT_MODEL
    checkpoint: str | None = None
    data: str = DEFAULT_DATA
    budget: list[str] = field(default_factory=lambda: ["flops=0.5"])
    episodes: int = 100
    agent: str = "ddpg"
    criterion: str = "l1"
    reward: str = "acc"
    seed: int = 0
    device: str = "cpu"
    round_to: int = 1
    min_keep: float = 0.2
    bn_calibration: int = 512
    val_size: int = 1000
    select_top: int = 8
    select_size: int = 5000
    reconstruct: bool = True
    fill_budget: bool = True
    warmup: int | None = None
    agent_options: list[str] = field(default_factory=list)
    out: str | None = None
    tensorboard: bool = False
    latency: bool = False
    runtime: str = "torch"
    latency_batch: int = 1
    cache_dir: str | None = None
    energy_model: str | None = None
    threads: int = 1

    def agent_option_values(self) -> dict[str, Any]:
        """``agent_options`` (``["noise_sigma=0.3", ...]``) plus ``warmup`` as keyword options of the agent.

        Raises:
            AdcError: on an entry that is not KEY=VALUE.
        """
        values: dict[str, Any] = {}
        for item in self.agent_options:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip() or not value.strip():
                raise AdcError(f"--agent-option {item!r}: expected KEY=VALUE, such as noise_sigma=0.3")
            values[key.strip()] = value.strip()
        if self.warmup is not None:
            values["warmup"] = self.warmup
        return values

    @classmethod
    def from_file(cls, path: str | Path) -> SearchConfig:
        """Read a ``config.toml`` written by a previous search.

        Raises:
            AdcError: on an unknown key (names it and the valid ones).
        """
        values = read_config(path)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise AdcError(f"config {str(path)!r}: unknown setting {unknown[0]!r}; valid: {', '.join(sorted(names))}")
        return cls(**values)

    def validate(self) -> None:
        """Check the cheap things first, so a bad flag fails before any work."""
        from agents import AGENTS
        from adc.criteria import CRITERIA
        from adc.rewards import get_reward

        for b in self.budget:
            parse_budget(b)
        from agents.base import parse_options

        parse_options(self.agent, AGENTS.get(self.agent).Options, self.agent_option_values())
        CRITERIA.get(self.criterion)
        get_reward(self.reward)
        check_device(self.device)
        from adc.energy import load_energy_model
        from adc.latency import RUNTIMES

        if self.runtime not in RUNTIMES:
            raise AdcError(f"--runtime {self.runtime!r}: valid: {', '.join(RUNTIMES)}")
        if self.latency_batch < 1:
            raise AdcError(f"--latency-batch {self.latency_batch}: must be a positive integer")
        load_energy_model(self.energy_model)
        if self.episodes < 1:
            raise AdcError(f"--episodes {self.episodes}: need at least 1")
        if not 0 < self.min_keep <= 1:
            raise AdcError(f"--min-keep {self.min_keep}: must be in (0, 1]")
        if self.threads < 1:
            raise AdcError(f"--threads {self.threads}: must be a positive integer")
        if self.round_to < 1:
            raise AdcError(f"--round-to {self.round_to}: must be a positive integer")
        if self.bn_calibration < 0 or self.val_size < 1:
            raise AdcError("--bn-calibration must be >= 0 and --val-size >= 1")
        if self.select_top < 0 or self.select_size < 0:
            raise AdcError(f"--select-top {self.select_top} / --select-size {self.select_size}: must be >= 0")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise AdcError(f"--checkpoint {self.checkpoint!r}: file does not exist")


def load_model(config: SearchConfig, splits: DataSplits, progress: Callable[[str], None] | None = None) -> nn.Module:
    """Build the model and load its weights (training adc's default on first use)."""
    model = build_model(config.model, num_classes=splits.num_classes, in_channels=splits.in_channels)
    if config.checkpoint:
        return load_checkpoint(model, config.checkpoint)
    if config.model.startswith("zoo:"):
        if progress:
            progress(f"training {config.model} on {config.data} (first use; cached afterwards)")
        path = ensure_trained(config.model, config.data, epochs=DEFAULT_EPOCHS, seed=0)
        return load_checkpoint(model, path)
    if config.model.startswith("torchvision:"):
        raise AdcError(f"model {config.model!r} has no trained weights here: pass --checkpoint FILE (a state dict)")
    return model  # a plugin builds its own trained model


def run_search(
    config: SearchConfig,
    *,
    resume: bool = False,
    progress: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    status: Callable[[str], None] | None = None,
    table_progress: Callable[[int, int, str], None] | None = None,
) -> tuple[SearchResult, Path]:
    """Run a whole search and write its folder.

    Args:
        config: The settings.
        resume: Continue the search checkpointed in ``config.out``.
        progress: Per-episode callback ``(record, best)``.
        status: Called with one-line status messages (training, writing).

    Returns:
        The result and the run folder.
    """
    config.validate()
    # One intra-op thread by default: on a shared 2-core machine the default
    # (one per core) made OpenMP spin and stalled the demo from 18 s to 9 min.
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run_search(config, resume=resume, progress=progress, status=status, table_progress=table_progress)
    finally:
        torch.set_num_threads(previous)


def _run_search(
    config: SearchConfig,
    *,
    resume: bool,
    progress: Callable[[dict[str, Any], dict[str, Any]], None] | None,
    status: Callable[[str], None] | None,
    table_progress: Callable[[int, int, str], None] | None,
) -> tuple[SearchResult, Path]:
    out = Path(config.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    if not resume and (out / "model.pt").exists():
        raise AdcError(f"--out {str(out)!r} already holds a finished search; choose another folder or --resume it")
    if not resume and (out / CHECKPOINT_DIR).exists():
        raise AdcError(f"--out {str(out)!r} already holds an unfinished search; continue it with --resume {out} or choose another folder")
    config.out = str(out)
    started = time.perf_counter()
    splits = load_data(config.data)
    model = load_model(config, splits, status)
    x = example_input(splits)
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.asdict(config)
    if not resume:  # a resumed run keeps its config.toml until the search has accepted the settings
        write_config(out / CONFIG_FILE, settings)
    options = config.agent_option_values()
    writer = _tensorboard(out) if config.tensorboard else None
    if writer is not None:
        progress = _logging_progress(writer, progress)
    try:
        result = search(
            model, x, data=splits, budget=config.budget, agent=config.agent, episodes=config.episodes,
            criterion=config.criterion, reward=config.reward, seed=config.seed, round_to=config.round_to,
            min_keep=config.min_keep, bn_calibration=config.bn_calibration, val_size=config.val_size,
            select_top=config.select_top, select_size=config.select_size,
            reconstruct=config.reconstruct, fill_budget=config.fill_budget, device=config.device,
            agent_options=options, out=out, resume=resume, progress=progress,
            latency=config.latency, runtime=config.runtime, latency_batch=config.latency_batch, cache_dir=config.cache_dir,
            energy_model=config.energy_model, table_progress=table_progress, threads=config.threads,
        )
    except AdcError:
        # Refused before any episode (an unreachable budget, say): leave no half-made run folder behind.
        if writer is not None:
            writer.close()
        if fresh and not (out / CHECKPOINT_DIR).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    if writer is not None:
        writer.close()
    if resume:
        write_config(out / CONFIG_FILE, settings)
    if status:
        status(f"writing {out}")
    write_outputs(out, result, model, x, splits, settings, time.perf_counter() - started)
    return result, out


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AdcError("--tensorboard needs the tensorboard package: pip install 'adc[tensorboard]'") from None
    return SummaryWriter(log_dir=str(out / "tb"))


def _logging_progress(writer: Any, progress: Callable | None) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """Wrap a progress callback so every episode is also logged to TensorBoard."""

    def log(record: dict[str, Any], best: dict[str, Any]) -> None:
        step = record["episode"]
        writer.add_scalar("reward/episode", record["reward"], step)
        writer.add_scalar("reward/best", best["reward"], step)
        for key in ("top1", "flops_ratio", "params_ratio"):
            writer.add_scalar(f"metrics/{key}", record["metrics"][key], step)
        if progress is not None:
            progress(record, best)

    return log


def write_outputs(out: Path, result: SearchResult, model: nn.Module, x: torch.Tensor, splits: DataSplits | None,
                  settings: dict[str, Any], wall_time: float) -> None:
    """Save the best pruned model and every report file into ``out``."""
    import json

    pruned = result.prune()
    device = next(model.parameters()).device
    test = None
    if splits is not None:
        test = {"original": evaluate(model, splits.test, device=str(device))["top1"],
                "pruned": evaluate(pruned, splits.test, device=str(device))["top1"]}
    pruned_cpu = pruned.to("cpu")
    counted = count(pruned_cpu, x.to("cpu"))
    meta = {"metrics": result.metrics, "original": result.original, "test_top1": test,
            "counted": counted._asdict(), "settings": settings, "example_shape": list(x.shape)}
    save(pruned_cpu, out / "model.pt", policy=result.policy, meta=meta)
    atomic_write_text(out / "policy.json", json.dumps(
        {"policy": result.policy, "kept": result.kept, "reward": result.reward, "metrics": result.metrics,
         "episode": result.episode, "selection": result.selection,
         "test_top1": test}, indent=2))
    write_history_csv(out / "history.csv", result.history)
    graph = result._pruner.graph
    plot_policy(out / "policy.png", graph, result.kept)
    plot_rewards(out / "reward.png", result.history)
    speed = _speedup(model, pruned_cpu, x, settings)
    write_report(out / "report.md", graph=graph, result=result, settings=settings, counted=counted._asdict(),
                 test=test, wall_time=wall_time, speed=speed)


def _speedup(model: nn.Module, pruned: nn.Module, x: torch.Tensor, settings: dict[str, Any]) -> dict[str, Any]:
    """Measured latency of the unpruned vs the saved pruned model at batch 1 (a few repeats; for the report)."""
    from adc.latency import measured_speedup

    runtime = settings.get("runtime") or "torch"
    device = settings.get("device") or "cpu"
    try:
        return measured_speedup(model, pruned, x, runtime=runtime, device=device if runtime == "torch" else "cpu")
    except Exception as exc:  # an optional report line: never lose the finished search over it
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}", "runtime": runtime}
