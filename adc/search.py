"""The search loop: an agent plays pruning episodes; the best policy is kept.

``adc.search`` wires a model, an evaluation (the user's function, or the
validation split of a data source), budgets, a reward and an agent into a
:class:`~envs.pruning_env.PruningEnv`, plays the episodes, and returns a
:class:`SearchResult`. With ``out`` it also checkpoints the agent and the
history every few episodes (``resume=True`` continues to the same total) and
writes the outputs a user ships from (:mod:`adc.outputs`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adc.budgets import BudgetSpec
from adc.data import DataSplits
from adc.energy import load_energy_model
from adc.errors import AdcError
from adc.latency import build_latency_table
from adc.pruning import ChannelPruner
from adc.rewards import Reward
from adc.serialization import atomic_write_text
from adc.training import evaluate as evaluate_split
from adc.training import prepare_batch, recalibrate_bn

CHECKPOINT_DIR = "checkpoint"
HISTORY_FILE = "history.json"
DEVICES = ("cpu", "cuda")
MIN_HOLDOUT = 500
"""Fewest held-out validation images worth a final selection (a standard error of about 1.3 points at 90%)."""


@dataclass
class SearchResult:
    """What a search found.

    Attributes:
        policy: Unit name -> sparsity of the best episode.
        kept: Unit name -> channels kept.
        metrics: The best episode's metrics record (validation accuracy, costs, ratios).
        reward: Its reward.
        original: The unpruned model's record (no recalibration).
        history: One record per episode, in order.
        interrupted: True if the search stopped early (Ctrl-C).
        episode: The episode the result's policy comes from.
        selection: The final selection, when it ran: one entry per re-scored
            candidate (``episode``, ``reward`` on the search's validation
            subset, ``holdout_reward`` and ``holdout_top1`` on held-out
            validation images), best first by the held-out reward; the result
            is the first entry's episode.
    """

    policy: dict[str, float]
    kept: dict[str, int]
    metrics: dict[str, float]
    reward: float
    original: dict[str, float]
    history: list[dict[str, Any]]
    interrupted: bool = False
    selection: list[dict[str, Any]] = field(default_factory=list)
    episode: int = -1
    _pruner: ChannelPruner | None = field(default=None, repr=False)
    _bn_images: torch.Tensor | None = field(default=None, repr=False)

    def prune(self, model: nn.Module | None = None) -> nn.Module:
        """The best policy applied for real, with batch-norm statistics re-estimated.

        Args:
            model: The model to prune (default: the searched one). Another model
                of the same architecture gets the same criterion, rounding,
                calibration data and reconstruction.
        """
        if self._pruner is None:
            raise AdcError("this SearchResult has no pruner attached; prune with adc.prune(model, x, result.policy)")
        pruner = self._pruner
        if model is not None and model is not pruner.model:
            pruner = ChannelPruner(model, pruner.example_input, criterion=pruner.criterion, round_to=pruner.round_to,
                                   calibration=pruner.calibration, reconstruct=pruner.reconstruct, seed=pruner.seed)
        pruned = pruner.prune(self.policy)
        if self._bn_images is not None:
            recalibrate_bn(pruned, self._bn_images)
        return pruned.eval()


def check_device(device: str) -> torch.device:
    """Refuse a device that is not present, in one line."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise AdcError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AdcError(f"device {device!r} is not available on this machine (torch.cuda.is_available() is False); use --device cpu")
    return torch.device(device)


def _fixed_images(dataset: torch.utils.data.Dataset, count: int, seed: int) -> torch.Tensor | None:
    """``count`` training images chosen once with ``seed`` (for BN recalibration)."""
    if count <= 0:
        return None
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=gen)[: min(count, len(dataset))]
    return torch.stack([dataset[int(i)][0] for i in order])


def _calibration_batches(dataset: torch.utils.data.Dataset, count: int, seed: int, batch: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(len(dataset), generator=gen)[: min(count, len(dataset))]
    samples = [dataset[int(i)] for i in order]
    images = torch.stack([s[0] for s in samples])
    labels = torch.as_tensor([int(s[1]) for s in samples])
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, len(images), batch)]


def validation_evaluator(splits: DataSplits, *, val_size: int, device: torch.device, batch_size: int = 128,
                         offset: int = 0) -> Callable[[nn.Module], dict]:
    """Evaluate on a fixed subset of the validation split (never the test split): images ``offset`` to ``offset + val_size``."""
    images, labels = [], []
    for i in range(offset, min(offset + val_size, len(splits.val))):
        x, y = splits.val[i]
        images.append(x)
        labels.append(int(y))
    if not images:
        raise AdcError(f"the validation split of {splits.name!r} is empty; raise the validation fraction")
    # Laid out once as evaluate() wants it (channels_last on CPU), not again every episode.
    data = list(zip(prepare_batch(torch.stack(images), device).split(batch_size),
                    torch.as_tensor(labels).to(device).split(batch_size)))

    def evaluate(model: nn.Module) -> dict:
        return evaluate_split(model, data, device=str(device), batch_size=batch_size)

    return evaluate


def needs_latency(budgets: Iterable[str | BudgetSpec | Any], reward: Any, latency: bool = False) -> bool:
    """Whether a search must measure a latency table: a latency budget, a latency reward, or asked."""
    from adc.budgets import Budget, parse_budget
    from adc.rewards import NEEDS_LATENCY

    keys = set()
    for b in budgets:
        if isinstance(b, (BudgetSpec, Budget)):
            keys.add(b.key)
        else:
            keys.add(parse_budget(str(b)).key)
    return latency or "latency" in keys or (isinstance(reward, str) and reward in NEEDS_LATENCY)


def search(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    evaluate: Callable[[nn.Module], Mapping[str, float]] | None = None,
    data: DataSplits | None = None,
    budget: Mapping[str, float | str] | Iterable[str | BudgetSpec] = ("flops=0.5",),
    agent: str = "ddpg",
    episodes: int = 100,
    criterion: str = "l1",
    reward: str | Reward = "acc",
    seed: int = 0,
    round_to: int = 1,
    min_keep: float = 0.2,
    bn_calibration: int = 512,
    val_size: int = 1000,
    calibration_size: int = 256,
    select_top: int = 8,
    select_size: int = 5000,
    reconstruct: bool | None = None,
    fill_budget: bool = True,
    exploit_episodes: int | None = None,
    refine_episodes: int | None = None,
    device: str = "cpu",
    agent_options: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 10,
    progress: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    bn_images: torch.Tensor | None = None,
    latency: bool = False,
    latency_table: Any = None,
    runtime: str = "torch",
    latency_batch: int = 1,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    energy_model: Any = None,
    table_progress: Callable[[int, int, str], None] | None = None,
) -> SearchResult:
    """Search the per-unit sparsity that maximises the reward under every budget.

    Args:
        model: The trained model (not modified).
        example_input: An input batch of the right shape.
        evaluate: ``evaluate(model) -> {"top1", ...}`` on held-out data; or give ``data``.
        data: Data splits; the reward uses ``val_size`` images of the validation
            split, BN recalibration ``bn_calibration`` training images.
        budget: ``{"flops": 0.5}`` or ``["flops=0.5", "params=1M"]``.
        agent: Name in :data:`agents.AGENTS`.
        episodes: Total episodes. A learning agent plays its last
            ``exploit_episodes`` (default a tenth) without exploration noise,
            then ``refine_episodes`` (default a tenth) perturb the best policy
            found (a local search that cashes in what the agent learned).
        criterion: Channel criterion; ``round_to``: kept-count multiple;
            ``min_keep``: smallest kept fraction of a unit.
        reward: Reward name, plugin spec or callable.
        seed: Seeds the agent and every sampled subset; same seed, same search on CPU.
        select_top: The final selection: the ``select_top`` best distinct
            policies are re-scored on up to ``select_size`` validation images
            the reward never saw, and the best there is the result. The best of
            hundreds of rewards measured on ``val_size`` images is biased
            upward (on the Fashion-MNIST benchmark the top policy scored 93.7%
            on its 1,000 images and 91.2% on the test set, 1.3 points below
            uniform); an unbiased second look at a few candidates removes most
            of that.
            Needs ``data`` with at least 500 validation images beyond
            ``val_size``; 0 or 1 turns it off. Not run on an interrupted search.
        select_size: Held-out validation images of the final selection.
        reconstruct: Least-squares reconstruction of pruned layers (AMC's channel
            pruning, ThiNet): each layer after a pruned unit is refit on
            ``calibration_size`` training images. None (default) turns it on
            when ``data`` is given (it needs training images) and off otherwise.
            On the Fashion-MNIST benchmark it lifts uniform pruning at 50%
            FLOPs from 66% to 92% test top-1 before fine-tuning, for 3-9% more
            time per episode.
        fill_budget: Raise actions so each policy uses its budget (see the environment).
        device: ``cpu`` or ``cuda``.
        agent_options: Agent-specific options (e.g. ``{"warmup": 20}``).
        out: Folder for checkpoints (and, through the CLI, the outputs).
        resume: Continue the search checkpointed in ``out``.
        checkpoint_every: Episodes between checkpoints.
        progress: Called after each episode with ``(episode_record, best_record)``.
        bn_images: Images for BN recalibration when ``data`` is not given.
        latency: Record every episode's predicted latency even without a latency
            budget or reward (a latency table is measured, or read from the cache).
        latency_table: A ready :class:`~adc.latency.LatencyTable`; otherwise one is
            built when a latency budget, ``acc_latency`` or ``latency=True`` asks for it,
            with ``runtime`` (torch / onnxruntime) on ``device``, ``latency_batch``,
            ``threads`` and ``cache_dir`` (see :func:`adc.latency.build_latency_table`).
            Default searches measure nothing.
        energy_model: :class:`~adc.energy.EnergyModel` or a TOML path (default: Horowitz 45 nm).
        table_progress: ``(done, total, layer)`` while the latency table is measured.

    Returns:
        The :class:`SearchResult`; interrupted searches (Ctrl-C) return what they found.
    """
    from agents import AGENTS, load_agent, make_agent
    from envs.pruning_env import PruningEnv

    if evaluate is None and data is None:
        raise AdcError("search needs evaluate= (a function of a model returning {'top1': ...}) or data= (DataSplits)")
    if episodes < 1:
        raise AdcError(f"episodes={episodes}: the search needs at least 1 episode")
    AGENTS.get(agent)
    dev = check_device(device)
    model = model.to(dev).eval()
    example_input = example_input.to(dev)
    budgets = [f"{k}={v}" for k, v in budget.items()] if isinstance(budget, Mapping) else list(budget)

    if select_top < 0 or select_size < 0:
        raise AdcError(f"select_top={select_top}, select_size={select_size}: must be >= 0")
    holdout_evaluate = None
    calibration = None
    if reconstruct is None:
        reconstruct = data is not None
    if data is not None:
        if evaluate is None:
            evaluate = validation_evaluator(data, val_size=val_size, device=dev)
            if select_top > 1 and min(select_size, len(data.val) - val_size) >= MIN_HOLDOUT:
                holdout_evaluate = validation_evaluator(data, val_size=select_size, device=dev, offset=val_size)
        if bn_images is None:
            bn_images = _fixed_images(data.train, bn_calibration, seed)
        if criterion in ("taylor", "apoz") or reconstruct:
            calibration = [(x.to(dev), y.to(dev)) for x, y in _calibration_batches(data.train, calibration_size, seed)]
    if bn_images is not None:
        bn_images = prepare_batch(bn_images, dev)  # once, not at every recalibration

    energy_model = load_energy_model(energy_model)
    if latency_table is None and needs_latency(budgets, reward, latency):
        latency_table = build_latency_table(model, example_input, batch=latency_batch, runtime=runtime, device=device,
                                            threads=threads, cache_dir=cache_dir, min_keep=min_keep, round_to=round_to,
                                            progress=table_progress)
    env = PruningEnv(model, example_input, evaluate=evaluate, budgets=budgets, reward=reward, criterion=criterion,
                     round_to=round_to, min_keep=min_keep, bn_images=bn_images, calibration=calibration,
                     reconstruct=reconstruct, fill_budget=fill_budget, seed=seed, latency_table=latency_table,
                     energy_model=energy_model)

    out_dir = Path(out) if out is not None else None
    history: list[dict[str, Any]] = []
    checkpoint = out_dir / CHECKPOINT_DIR if out_dir is not None else None
    if resume:
        if checkpoint is None or not (checkpoint / HISTORY_FILE).is_file():
            raise AdcError(f"nothing to resume in {str(out_dir)!r}: no {CHECKPOINT_DIR}/{HISTORY_FILE} there")
        history = json.loads((checkpoint / HISTORY_FILE).read_text())
        runner = load_agent(checkpoint / "agent", env)
    else:
        runner = make_agent(agent, env, episodes=episodes, seed=seed, **dict(agent_options or {}))

    n_exploit = n_refine = 0
    if runner.can_exploit:
        n_exploit = max(1, episodes // 10) if exploit_episodes is None else max(0, min(episodes - 1, exploit_episodes))
        n_refine = max(1, episodes // 10) if refine_episodes is None else max(0, refine_episodes)
        n_refine = min(n_refine, max(0, episodes - n_exploit - 1))
    best: dict[str, Any] = max(history, key=lambda r: r["reward"]) if history else {}
    started = [time.perf_counter()]

    def save_checkpoint() -> None:
        if checkpoint is None:
            return
        runner.save(checkpoint / "agent")
        atomic_write_text(checkpoint / HISTORY_FILE, json.dumps(history))

    def on_episode(info: dict[str, Any]) -> bool:
        nonlocal best
        now = time.perf_counter()
        record = episode_record(len(history), info, now - started[0])
        started[0] = now
        history.append(record)
        if not best or record["reward"] > best["reward"]:
            best = record
        record["best_reward"] = best["reward"]
        if progress is not None:
            progress(record, best)
        if checkpoint is not None and len(history) % checkpoint_every == 0:
            save_checkpoint()
        return True

    interrupted = False
    try:
        explore_left = max(0, episodes - n_exploit - n_refine - len(history))
        if explore_left:
            runner.run(explore_left, on_episode, explore=True)
        exploit_left = max(0, episodes - n_refine - len(history))
        if exploit_left > 0 and runner.can_exploit:
            runner.run(exploit_left, on_episode, explore=False)
        refine_left = episodes - len(history)
        if refine_left > 0 and runner.can_exploit:
            refine(env, lambda: best, refine_left, on_episode, seed=seed + len(history))
    except KeyboardInterrupt:
        interrupted = True
    if checkpoint is not None and history:
        save_checkpoint()
    if not history:
        raise AdcError("the search was interrupted before its first episode finished; nothing to report")
    selection: list[dict[str, Any]] = []
    if holdout_evaluate is not None and not interrupted:
        selection = select_on_holdout(env, history, holdout_evaluate, top=select_top)
        if selection:
            best = history[selection[0]["episode"]]
    return SearchResult(
        policy=dict(best["policy"]), kept=dict(best["kept"]), metrics=dict(best["metrics"]), reward=float(best["reward"]),
        original=dict(env.original_record), history=history, interrupted=interrupted, selection=selection,
        episode=int(best["episode"]),
        _pruner=env.pruner, _bn_images=bn_images,
    )


def select_on_holdout(env: Any, history: list[dict[str, Any]], evaluate: Callable[[nn.Module], Mapping[str, float]],
                      *, top: int) -> list[dict[str, Any]]:
    """Re-score the ``top`` best distinct policies of ``history`` with ``evaluate``; best first.

    The environment prunes, reconstructs and recalibrates each candidate as in
    an episode; only the images it is evaluated on change, so the reward is
    the same function of an unbiased accuracy estimate. Returns [] when there
    are fewer than two distinct candidates.
    """
    seen: set[tuple[int, ...]] = set()
    candidates: list[dict[str, Any]] = []
    for record in sorted(history, key=lambda r: r["reward"], reverse=True):
        kept = tuple(int(record["kept"][u.name]) for u in env.units)
        if kept not in seen:
            seen.add(kept)
            candidates.append(record)
        if len(candidates) == top:
            break
    if len(candidates) < 2:
        return []
    search_evaluate, env.evaluate_fn = env.evaluate_fn, evaluate
    try:
        scored = []
        for record in candidates:
            result = env.score_kept(np.array([record["kept"][u.name] for u in env.units], dtype=np.float64))
            scored.append({"episode": int(record["episode"]), "reward": float(record["reward"]),
                           "holdout_reward": float(result["reward"]), "holdout_top1": float(result["metrics"]["top1"])})
    finally:
        env.evaluate_fn = search_evaluate
    return sorted(scored, key=lambda c: c["holdout_reward"], reverse=True)


def refine(env: Any, best: Callable[[], Mapping[str, Any]], episodes: int, on_episode: Callable[[dict], bool],
           *, seed: int, sigma: tuple[float, float] = (0.1, 0.02)) -> None:
    """Local search around the best policy so far: perturb its actions, play them through the env.

    A learning agent's episodes concentrate where good policies are, but its
    single best episode is often matched by random search with the same
    budget (DESIGN.md); hill-climbing from the best policy with shrinking
    Gaussian steps turns that concentration into a better final policy.
    The environment clips every perturbed policy, so budgets still hold.

    Args:
        env: The pruning environment.
        best: Returns the best record so far (it changes as better ones come).
        episodes: How many perturbed episodes to play.
        on_episode: The search's per-episode callback.
        seed: Seed of the perturbations.
        sigma: First and last standard deviation of the action perturbation.
    """
    rng = np.random.default_rng(seed)
    for j in range(episodes):
        scale = sigma[0] * (sigma[1] / sigma[0]) ** (j / max(1, episodes - 1))
        base = np.asarray(best()["actions"], dtype=np.float64)
        actions = np.clip(base + rng.normal(0.0, scale, size=len(base)), 0.0, 1.0)
        env.reset()
        info: dict[str, Any] = {}
        for a in actions:
            _, _, terminated, _, info = env.step(np.array([a], dtype=np.float32))
        info = dict(info)
        info["agent"] = {"phase": "refine", "sigma": float(scale)}
        if not on_episode(info):
            return


def episode_record(index: int, info: Mapping[str, Any], wall: float) -> dict[str, Any]:
    """One history row from an environment's final info (JSON-serialisable)."""
    agent_info = info.get("agent") or {}
    timing = info.get("timing", {})
    return {
        "episode": index,
        "phase": agent_info.get("phase", "explore"),
        "reward": float(info["reward"]),
        "metrics": {k: float(v) for k, v in info["metrics"].items()},
        "policy": {k: float(v) for k, v in info["policy"].items()},
        "kept": {k: int(v) for k, v in info["kept"].items()},
        "actions": [float(a) for a in info.get("actions", [])],
        "budget_use": {k: float(v) for k, v in info.get("budget_use", {}).items()},
        "wall_time": float(wall),
        "evaluate_time": float(timing.get("evaluate", 0.0)),
        "prune_time": float(timing.get("prune", 0.0)),
        "sigma": agent_info.get("sigma"),
    }
