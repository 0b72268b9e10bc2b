"""The search loop, in phases: build, play the strategy, select; and :func:`search`, the one-call API.

:class:`Search` builds the evaluation (validation images or the user's
function, calibration images), the pruner, the policy space, the latency
table when one is needed, the task, the worker pool, N environments and the
agent (or the agent of a checkpoint, to resume). It then plays the agent's
phases -- exploration, then for a learning agent noise-free exploitation and
a refinement around the best policy -- in rounds of N episodes, tells its
callbacks (progress, checkpoints, TensorBoard) after every episode and
round, and finally re-scores the best candidates on held-out images. Writing
the run folder is the run layer's job (:mod:`adc.run.pipeline`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from adc.agents import AGENTS, Agent, CMARefiner, Refinement, Refiner, make_agent
from adc.analysis.alignment import probe_alignment
from adc.analysis.graph import ModelGraph, analyze
from adc.analysis.latency import LatencyTable, build_latency_table
from adc.analysis.space import PolicySpace
from adc.analysis.timers import SideBySide, Timer, make_timer, side_by_side
from adc.engine.callbacks import CallbackList, CheckpointCallback, ProgressCallback, SearchCallback
from adc.engine.checkpoint import Checkpoint
from adc.engine.interrupt import DeferredInterrupt
from adc.engine.options import DATA_CRITERIA, LABEL_CRITERIA, SearchOptions
from adc.engine.result import SearchResult
from adc.engine.front import EvaluationCache, best_fitting, fitting, kept_of, split_episodes
from adc.engine.latency_hold import LatencyHold, hold_latency
from adc.engine.selection import MIN_HOLDOUT, select_on_holdout
from adc.engine.workers import InProcessPool, RayPool, make_pool
from adc.envs import contract
from adc.envs.pruning_env import PruningEnv
from adc.envs.task import ModelTask
from adc.envs.vec_env import PruningVecEnv
from adc.inputs.calibration import calibration_set, fixed_images, image_range, labelled_batches
from adc.inputs.data import DataSplits
from adc.objective.budgets import Budget, BudgetSpec, UnreachableBudget, resolve_budgets
from adc.objective.evaluator import Score, ValidationScore
from adc.pruning.pruner import ChannelPruner
from adc.utils.device import check_device, torch_threads
from adc.utils.errors import AdcError

RESUME_MAY_CHANGE = frozenset({"threads", "ray_address", "checkpoint_every", "gpus_per_worker", "eval_batch_size",
                               "cache_dir", "resolved_round_to"})
"""Settings a resumed search may change: they do not change which policies it plays (the rounding an
``auto`` search measured is read back from the checkpoint, not measured again)."""


def default_refine_episodes(episodes: int) -> int:
    """Episodes of a learning agent's refinement when ``refine_episodes`` is not set: three tenths.

    On benchmark v2's six cells, 60 of 200 episodes refined by CMA-ES from the
    best policy beat the earlier tenth by Gaussian steps by +0.24 +- 0.10 points
    of test top-1 over 18 paired searches; it lost only on ResNet-56 at 50%
    FLOPs (``benchmarks/results/v2_ddpg-refine-cma-60.md``).
    """
    return max(1, episodes * 3 // 10)


def phase_plan(episodes: int, workers: int, can_exploit: bool, exploit: int | None,
               refine: int | None) -> tuple[int, int, int]:
    """Episodes of exploration, exploitation and refinement.

    A learning agent plays its noise-free policy for a tenth of the episodes
    (``exploit``), then refines the best policy for the last three tenths
    (``refine``, :func:`default_refine_episodes`); the explore and exploit
    phases are whole rounds of ``workers`` episodes, the refinement takes the
    rest.
    """
    if not can_exploit:
        return episodes, 0, 0
    n_exploit = max(1, episodes // 10) if exploit is None else max(0, min(episodes - 1, exploit))
    n_refine = default_refine_episodes(episodes) if refine is None else max(0, refine)
    n_refine = min(n_refine, max(0, episodes - n_exploit - 1))
    n_explore = episodes - n_exploit - n_refine
    if workers > 1:
        n_explore = max(workers, n_explore // workers * workers)
        n_exploit = min(-(-n_exploit // workers) * workers, max(0, (episodes - n_explore) // workers * workers))
        n_refine = max(0, episodes - n_explore - n_exploit)
    return n_explore, n_exploit, n_refine


def episode_record(index: int, info: Mapping[str, Any], wall: float) -> dict[str, Any]:
    """One history row from an environment's final info (JSON-serialisable)."""
    agent_info = info.get(contract.AGENT) or {}
    timing = info.get(contract.TIMING, {})
    return {
        "episode": index,
        "phase": agent_info.get("phase", "explore"),
        "reward": float(info[contract.REWARD]),
        "metrics": {k: float(v) for k, v in info[contract.METRICS].items()},
        "policy": {k: float(v) for k, v in info[contract.POLICY].items()},
        "kept": {k: int(v) for k, v in info[contract.KEPT].items()},
        "actions": [float(a) for a in info.get(contract.ACTIONS, [])],
        "budget_use": {k: float(v) for k, v in info.get(contract.BUDGET_USE, {}).items()},
        "wall_time": float(wall),
        "evaluate_time": float(timing.get("evaluate", 0.0)),
        "prune_time": float(timing.get("prune", 0.0)),
        "worker": int(info.get(contract.WORKER, 0)),
        "sigma": agent_info.get("sigma"),
        "evaluations": agent_info.get("evaluations"),
    }


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class Search:
    """One search, phase by phase (see the module docs).

    Args:
        model: The trained model (its weights are not modified).
        example_input: An input batch of the right shape.
        options: The settings.
        evaluate: ``evaluate(model)`` -> top-1 (float) or ``{"top1", ...}`` on held-out data; or give ``data``.
        calibration: Training images (DataLoader, Dataset or tensor) for BN recalibration,
            data-driven criteria and reconstruction, when ``data`` is not given.
        data: Data splits: the reward uses the validation split, calibration the training split.
        out: Folder of the checkpoint (``out/checkpoint``); None: no checkpoints.
        resume: Continue the search checkpointed in ``out``.
        latency_table: A ready latency table (otherwise one is measured when needed).
        table_progress: ``(done, total, layer)`` while a latency table is measured.
        callbacks: More callbacks.
        timer: Times models for the alignment probe, the latency table and the measured latency check
            (default: the search's ``runtime`` on its ``device`` with its ``threads``; tests pass a fake one).
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, options: SearchOptions, *,
                 evaluate: Score | None = None, calibration: Any = None, data: DataSplits | None = None,
                 out: str | Path | None = None, resume: bool = False, latency_table: LatencyTable | None = None,
                 table_progress: Callable[[int, int, str], None] | None = None,
                 callbacks: Iterable[SearchCallback] = (), timer: Timer | None = None) -> None:
        if evaluate is None and data is None:
            raise AdcError("search needs evaluate= (a function of a model returning its top-1 accuracy, or a dict "
                           "with 'top1') or data= (DataSplits)")
        if evaluate is not None and not callable(evaluate):
            raise AdcError(f"evaluate= is {type(evaluate).__name__}; pass a function of a model returning its top-1 "
                           "accuracy (a float) or a dict with 'top1'")
        self.model, self.example_input, self.options = model, example_input, options
        self.evaluate, self.calibration, self.data = evaluate, calibration, data
        self.checkpoint = Checkpoint(Path(out) / "checkpoint") if out is not None else None
        self.resume = resume
        self.latency_table = latency_table
        self.table_progress = table_progress
        self.timer = timer
        self._ratio_timer: Timer | None = None
        self.alignment: dict[str, Any] | None = None  # the probe's measurements and choice (round_to auto)
        self.round_to: int | None = None
        self.points: list[BudgetSpec | None] = options.front.points() if options.front else [None]
        self.point_budgets: list[list[Budget]] = []
        self.tasks: list[ModelTask] = []
        self.choices: list[dict[str, Any]] = []
        self._shapes: ChannelPruner | None = None
        self._saved_round_to: int | None = None
        self._point = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.notes: list[str] = []
        self.agent: Agent | None = None
        self.task: ModelTask | None = None
        self.pool: InProcessPool | RayPool | None = None
        self.envs: PruningVecEnv | None = None
        self.interrupted = False
        self.failure: str | None = None
        self.selection: list[dict[str, Any]] = []  # the final selection of the result's policy (the last point's)
        self.calibration_info: dict[str, Any] = {}
        self._holdout = False
        self._interrupt = DeferredInterrupt(self.note)
        if options.front and resume:
            raise AdcError(f"--resume: a front search ({options.front}) cannot be resumed; run it again")
        checkpoints = self.checkpoint is not None and not options.front
        self._checkpointer = CheckpointCallback(self.checkpoint, options.checkpoint_every) if checkpoints else None
        base = [self._checkpointer] if self._checkpointer else []
        self.callbacks = CallbackList([*base, *callbacks])
        self._started = time.perf_counter()

    # -- notes -----------------------------------------------------------------------

    def note(self, text: str) -> None:
        """Tell the user something about how the search runs (callbacks print it; the result keeps it)."""
        self.notes.append(text)
        self.callbacks.on_note(text)

    def checkpoint_settings(self) -> dict[str, Any]:
        """The settings a checkpoint records, so a resumed search can refuse changed ones (and the measured rounding)."""
        settings = {k: v for k, v in self.options.fields().items() if k not in RESUME_MAY_CHANGE}
        if settings.get("refine_episodes") is None and AGENTS.get(self.options.agent).can_exploit:
            # resolved: a learning agent's checkpoint made under an earlier adc's default refinement differs
            settings["refine_episodes"] = default_refine_episodes(self.options.episodes)
        if self.round_to is not None:
            settings["resolved_round_to"] = self.round_to
            if self.alignment is not None:
                settings["alignment"] = self.alignment
        return settings

    @property
    def front(self) -> bool:
        """Whether this search hands back a front of models (a budget range)."""
        return self.options.front is not None

    # -- build -----------------------------------------------------------------------

    def build(self) -> None:
        """Everything before the first episode: evaluation, pruner, rounding, space, latency table, task, workers, agent.

        Raises:
            AdcError: on anything the search cannot work with (no training images, an
                unreachable budget, a failing evaluation, a changed setting on resume, ...).
        """
        o = self.options
        dev = check_device(o.device)
        self.model = self.model.to(dev).eval()
        self.example_input = self.example_input.to(dev)
        if self.resume:
            self._load_history()
        score, source, bn_images, batches, reconstruct = self._evaluation_inputs(str(dev))
        graph = analyze(self.model, self.example_input)
        graph.require_units()
        # Pruned copies whose shape alone matters (the probe's, the latency anchors', the measured check's):
        # ranked by L1, without reconstruction, so they cost a copy and no refit.
        self._shapes = ChannelPruner(self.model, self.example_input, graph=graph)
        space = self._space(graph)
        pruner = ChannelPruner(self.model, self.example_input, criterion=o.criterion, round_to=space.round_to,
                               calibration=batches, reconstruct=reconstruct, seed=o.seed, graph=graph)
        self.task = ModelTask.build(
            self.model, self.example_input, score=score, budgets=self.point_budgets[0], reward=o.reward,
            fill_budget=o.fill_budget, bn_images=bn_images, pruner=pruner, space=space,
            latency_table=self.latency_table, energy_model=o.energy, source=source)
        self.tasks = [self.task, *[dataclasses.replace(self.task, budgets=b) for b in self.point_budgets[1:]]]
        self.pool = make_pool(self.task.evaluator, workers=o.workers, address=o.ray_address, device=o.device,
                              threads=o.threads, gpus_per_worker=o.gpus_per_worker)
        evaluate = EvaluationCache(self.pool.evaluate) if self.front else self.pool.evaluate
        for task in self.tasks:
            task.evaluate_many = evaluate
        if self._holdout_score is not None:
            self.pool.add_score("holdout", self._holdout_score, "the held-out validation images")
            self._holdout = True
        if self.front:
            self.note(f"front {o.front}: {len(self.points)} points, {' / '.join(map(str, self._episodes_per_point()))} "
                      "episodes each, tightest first; every point takes the best evaluated policy that fits it "
                      "(no checkpoints: a front search cannot be resumed)")
        self._start_point(0)

    def _episodes_per_point(self) -> list[int]:
        return split_episodes(self.options.episodes, len(self.points))

    def _start_point(self, i: int) -> None:
        """Environments and agent of point ``i`` (the resumed agent for a plain search's resume)."""
        o = self.options
        task = self.task = self.tasks[i]
        self.envs = PruningVecEnv.of(lambda: PruningEnv(task, observe_bounds=o.observe_bounds), o.workers)
        if self.resume:
            assert self.checkpoint is not None
            self.agent = self.checkpoint.agent(self.envs)
        else:
            episodes = self._episodes_per_point()[i]
            self.agent = make_agent(o.agent, self.envs, episodes=episodes, seed=o.seed + i, **o.agent_options)
        if i == 0:
            self._note_agent_settings()

    # -- rounding, space, latency table, budgets ------------------------------------------

    def _timer(self) -> Timer:
        """The latency table's timer: the one given, else the search's runtime (median of each timing's samples)."""
        o = self.options
        return self.timer or make_timer(o.runtime, o.device, o.threads)

    def _side_by_side_timer(self) -> Timer:
        """The probe's and the measured check's timer: the one given, else the minimum of each timing's samples.

        Those compare models timed moments apart; load on a shared machine only ever adds time, so the
        minimum is the steadiest statistic for a ratio.
        """
        if self.timer is not None:
            return self.timer
        if self._ratio_timer is None:
            o = self.options
            self._ratio_timer = make_timer(o.runtime, o.device, o.threads, statistic="min")
        return self._ratio_timer

    def _space(self, graph: ModelGraph) -> PolicySpace:
        """Resolve ``round_to`` (probe when ``auto``), build the space and the latency table, resolve every point's budgets.

        With ``auto``, a multiple under which a budget is unreachable gives way to the next smaller one (noted).
        """
        o = self.options
        order = self._rounding_order(graph)
        for n, round_to in enumerate(order):
            space = PolicySpace(graph, min_keep=o.min_keep, round_to=round_to)
            table = self.latency_table
            if table is None and o.needs_latency_table:
                assert self._shapes is not None
                table = build_latency_table(self.model, self.example_input, space, prune_to=self._shapes.prune_kept,
                                            batch=o.latency_batch, timer=self._timer(), cache_dir=o.cache_dir,
                                            progress=self.table_progress)
            try:
                self.point_budgets = [resolve_budgets(o.budgets_at(p), space, latency_table=table,
                                                      energy_model=o.energy) for p in self.points]
            except UnreachableBudget as exc:
                if n + 1 == len(order):
                    raise
                self.note(f"round_to {round_to} (measured fastest) cannot reach the budget ({exc}); "
                          f"using round_to {order[n + 1]}")
                continue
            self.latency_table, self.round_to = table, round_to
            return space
        raise AssertionError("unreachable")  # the loop returns or raises

    def _rounding_order(self, graph: ModelGraph) -> list[int]:
        """``[round_to]`` for an integer setting; for ``auto``, the probe's choice then its smaller fallbacks."""
        o = self.options
        if isinstance(o.round_to, int):
            return [o.round_to]
        if self._saved_round_to is not None:  # a resumed search keeps the rounding its first part measured
            return [self._saved_round_to]
        assert self._shapes is not None
        probe = probe_alignment(self.model, self.example_input, graph, prune_to=self._shapes.prune_kept,
                                timer=self._side_by_side_timer(), batch=o.latency_batch, cache_dir=o.cache_dir)
        self.alignment = probe.as_dict()
        self.note(f"round_to auto chose {probe.choice}: {probe.reason()}")
        return probe.preference()

    def _load_history(self) -> None:
        if self.checkpoint is None:
            raise AdcError("resume needs the folder of the interrupted search (out=...)")
        self.history = self.checkpoint.history()
        saved = self.checkpoint.settings()
        if isinstance(saved.get("resolved_round_to"), int):
            self._saved_round_to = int(saved["resolved_round_to"])
            self.alignment = saved.get("alignment")
        mine = self.checkpoint_settings()
        for key, value in mine.items():
            if key in saved and saved[key] != _jsonable(value):
                raise AdcError(f"resume: {('--' + key.replace('_', '-'))} {_jsonable(value)!r} differs from the "
                               f"interrupted search's {saved[key]!r}; a resumed search keeps its settings")
        self.best = max(self.history, key=lambda r: r["reward"]) if self.history else {}

    def _evaluation_inputs(self, device: str) -> tuple[Score, str, torch.Tensor | None, list | None, bool]:
        """The reward's scoring, BN images, calibration batches and whether to reconstruct; notes on shortfalls."""
        o = self.options
        self._holdout_score = None
        reconstruct = o.reconstruct
        needs_bn = o.bn_calibration > 0 and _has_batch_norm(self.model)
        if self.data is not None:
            data = self.data
            reconstruct = True if reconstruct is None else reconstruct
            bn_images = fixed_images(data.train, o.bn_calibration, o.seed) if needs_bn else None
            batches = (labelled_batches(data.train, o.calibration_size, o.seed)
                       if (o.criterion in DATA_CRITERIA or reconstruct) else None)
            self.calibration_info = {"source": f"the training split of {data.name!r}", "labelled": True}
            if self.evaluate is not None:
                score, source = self.evaluate, "evaluate"
            else:
                images, labels = image_range(data.val, 0, o.val_size)
                if len(labels) == 0:
                    raise AdcError(f"the validation split of {data.name!r} is empty; raise the validation fraction")
                score, source = ValidationScore(images, labels, device=device, batch_size=o.eval_batch_size), "validation"
                if len(labels) < o.val_size:
                    self.note(f"the reward is computed on {len(labels)} validation images, not the {o.val_size} asked "
                              f"for: the validation split of {data.name!r} has only {len(data.val)}")
                self._plan_holdout(data, device)
        else:
            assert self.evaluate is not None
            score, source = self.evaluate, "evaluate"
            bn_images, batches, reconstruct = self._user_calibration(needs_bn, reconstruct)
        self.calibration_info.update({
            "bn_images": 0 if bn_images is None else len(bn_images),
            "calibration_images": sum(len(x) for x, _ in batches) if batches else 0,
            "reconstruct": bool(reconstruct), "criterion": o.criterion})
        if o.bn_calibration > 0 and not _has_batch_norm(self.model):
            self.note("the model has no batch norm: nothing to recalibrate")
        return score, source, bn_images, batches, bool(reconstruct)

    def _user_calibration(self, needs_bn: bool, reconstruct: bool | None) -> tuple[torch.Tensor | None, list | None, bool]:
        o = self.options
        wants_batches = o.criterion in DATA_CRITERIA or reconstruct is not False
        if self.calibration is None:
            if needs_bn or reconstruct is None or reconstruct or o.criterion in DATA_CRITERIA:
                raise AdcError(
                    "adc.search with evaluate= needs training images for batch-norm recalibration, reconstruction "
                    f"and the {o.criterion!r} criterion: pass calibration= (a DataLoader, a Dataset of (image, label) "
                    "or a tensor of training images) or data=; to search without them, pass bn_calibration=0, "
                    "reconstruct=False (a freshly pruned model's accuracy then says little about its policy)")
            self.calibration_info = {"source": "none (bn_calibration=0, reconstruct=False)", "labelled": False}
            return None, None, False
        cal = calibration_set(self.calibration, bn_count=o.bn_calibration if needs_bn else 0,
                              batch_count=o.calibration_size if wants_batches else 0, seed=o.seed)
        if o.criterion in LABEL_CRITERIA and not cal.labelled:
            raise AdcError(f"criterion {o.criterion!r} needs labelled calibration data: pass a Dataset or DataLoader "
                           "of (image, label), not a tensor of images")
        self.calibration_info = {"source": cal.source, "labelled": cal.labelled}
        if needs_bn and cal.bn_count < o.bn_calibration:
            self.note(f"batch-norm recalibration uses {cal.bn_count} calibration images, not the {o.bn_calibration} "
                      "asked for: the calibration data has no more")
        return cal.bn_images, (cal.batches or None), bool(cal.batches) if reconstruct is None else bool(reconstruct)

    def _plan_holdout(self, data: DataSplits, device: str) -> None:
        o = self.options
        if o.select_top <= 1:
            return
        available = min(o.select_size, max(0, len(data.val) - o.val_size))
        if available < MIN_HOLDOUT:
            self.note(f"final selection skipped: {available} validation images remain beyond the reward's "
                      f"{o.val_size} (it needs {MIN_HOLDOUT}); the result is the episode with the best reward")
            return
        images, labels = image_range(data.val, o.val_size, o.select_size)
        self._holdout_score = ValidationScore(images, labels, device=device, batch_size=o.eval_batch_size)

    def _note_agent_settings(self) -> None:
        o = self.options
        if self.agent is not None and self.agent.one_policy and o.episodes > 1:
            spent = " (its probes use up to that many evaluations)" if self.agent.probes else ""
            self.note(f"agent {o.agent!r} plays one policy: --episodes {o.episodes} sets no episode count{spent}")
        warmup = getattr(self.agent, "warmup", None)
        explore, _, _ = phase_plan(o.episodes, o.workers, self.agent.can_exploit, o.exploit_episodes, o.refine_episodes)
        if warmup is not None and warmup >= explore:
            self.note(f"warm-up of {warmup} episodes, but only {explore} of the {o.episodes} episodes explore before the "
                      "noise-free and refinement phases: the agent learns nothing before acting; raise --episodes "
                      "or lower --warmup")

    # -- play ------------------------------------------------------------------------

    def _on_episode(self, info: dict[str, Any]) -> bool:
        now = time.perf_counter()
        record = episode_record(len(self.history), info, now - self._last)
        if self.front:
            record["point"] = self._point
        self._last = now
        self.history.append(record)
        if not self.best or record["reward"] > self.best["reward"]:
            self.best = record
        record["best_reward"] = self.best["reward"]
        return self.callbacks.on_episode(record, self.best)

    def _on_round(self) -> bool:
        # A round's episodes are scored together: each is given an equal share of the round's wall time.
        round_records = self.history[self._round_start:]
        if len(round_records) > 1:
            share = sum(r["wall_time"] for r in round_records) / len(round_records)
            for r in round_records:
                r["wall_time"] = share
        self._round_start = len(self.history)
        return self.callbacks.on_round(self) and not self._interrupt.requested

    def play(self) -> None:
        """Play the agent's phases (at every point of a front); a Ctrl-C or a failing plug-in stops them (what was played is kept)."""
        assert self.agent is not None and self.envs is not None
        o = self.options
        self.callbacks.on_search_start(self)
        self._last = time.perf_counter()
        self._round_start = len(self.history)
        clean = True
        with self._interrupt, torch_threads(o.threads):
            try:
                start = 0
                for i, episodes in enumerate(self._episodes_per_point()):
                    if i > 0:
                        if not self._going():
                            break
                        self._start_point(i)
                        self.best = best_fitting(self.history, self.tasks[i])
                    self._point = i
                    self._play_phases(episodes, start)
                    start += episodes
            except KeyboardInterrupt:
                self.interrupted, clean = True, False
            except AdcError as exc:
                self.failure, clean = f"episode {len(self.history)}: {exc}", False
        self.interrupted = self.interrupted or self._interrupt.requested or self.failure is not None
        if clean and self._checkpointer is not None:
            self._checkpointer.save(self)
        if not self.history:
            raise AdcError(self.failure or "the search was interrupted before its first episode finished; nothing to report")

    def _play_phases(self, episodes: int, start: int) -> None:
        """Exploration, then (a learning agent) exploitation and refinement: ``episodes`` from history row ``start``."""
        assert self.agent is not None and self.envs is not None
        o = self.options
        agent = self.agent
        explore, exploit, refine = phase_plan(episodes, o.workers, agent.can_exploit, o.exploit_episodes,
                                              o.refine_episodes)

        def played() -> int:
            return len(self.history) - start

        if played() < explore:
            agent.run(explore - played(), self._on_episode, explore=True, on_round=self._on_round)
        if self._going() and exploit and played() < explore + exploit:
            agent.run(explore + exploit - played(), self._on_episode, explore=False, on_round=self._on_round)
        if self._going() and refine and played() < episodes:
            phase_start = start + explore + exploit
            refiner: Refinement
            if o.refine_method == "cmaes":
                centre = self._best_of(self.history[:phase_start])["actions"]
                refiner = CMARefiner(self.envs, centre, episodes=refine, seed=o.seed + explore + exploit,
                                     told=[r["reward"] for r in self.history[phase_start:]])
            else:
                refiner = Refiner(self.envs, lambda: self.best, episodes=refine, seed=o.seed + explore + exploit,
                                  done=played() - explore - exploit)
            refiner.run(episodes - played(), self._on_episode, on_round=self._on_round)

    def _best_of(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The best record of ``rows`` as :attr:`best` picks it (a front: the best fitting the current point)."""
        if self.front:
            return best_fitting(rows, self.tasks[self._point])
        return max(rows, key=lambda r: r["reward"])  # the earliest on ties, as _on_episode keeps it

    def _going(self) -> bool:
        return not self._interrupt.requested

    # -- select and result -------------------------------------------------------------

    def select(self) -> None:
        """Choose each point's policy: measured latency that holds the budget, then the held-out re-scoring.

        A latency budget is checked on the real pruned models, timed side by side with the unpruned one
        (:mod:`adc.engine.latency_hold`), also after an interruption; the held-out re-scoring is skipped then.

        Raises:
            AdcError: when no candidate's measured latency holds a latency budget (one line).
        """
        assert self.pool is not None and self.task is not None
        o = self.options
        pool = self.pool
        self.choices = []
        with torch_threads(o.threads):
            for i, task in enumerate(self.tasks):
                try:
                    hold = self._hold_latency(i, task) if self.failure is None else None
                except AdcError as exc:
                    if not self.front:
                        raise
                    self.note(f"front point {self.points[i]} dropped: {exc}")
                    continue
                names = [u.name for u in task.units]
                pool_records = fitting(self.history, task)
                if hold is not None:
                    held = set(hold.holding())
                    pool_records = [r for r in self.history if r["episode"] in held]
                if not pool_records:
                    continue
                selection = []
                if self._holdout and not self.interrupted and o.select_top > 1:
                    selection = select_on_holdout(task, lambda kepts: pool.evaluate(kepts, "holdout"), pool_records,
                                                  top=o.select_top)
                chosen = (self.history[selection[0]["episode"]] if selection
                          else max(pool_records, key=lambda r: r["reward"]))
                # Every budget holds: by the exact costs, and a latency budget by measurement (the table may disagree).
                kept = kept_of(chosen, names)
                assert all(b.price(kept) <= b.limit * (1 + 1e-9) for b in task.budgets
                           if hold is None or b.key != "latency")
                self.choices.append({"point": i, "record": chosen, "selection": selection,
                                     "latency_hold": hold.as_dict() if hold is not None else None})
        self.selection = self.choices[-1]["selection"] if self.choices else []

    def _hold_latency(self, i: int, task: ModelTask) -> LatencyHold | None:
        """The measured latency check of point ``i`` (None without a latency budget)."""
        o = self.options
        spec = next((b for b in o.budgets_at(self.points[i]) if b.key == "latency"), None)
        if spec is None:
            return None
        timer = self._side_by_side_timer()
        info = {"runtime": timer.runtime, "device": timer.device, "threads": timer.threads, "batch": o.latency_batch,
                "clock": getattr(timer, "clock", "wall")}
        return hold_latency(task, self.history, budget_text=str(spec), relative=spec.relative,
                            top=max(3, o.select_top), measure=self._measure, evaluate=self._evaluate_new(i), info=info)

    def _measure(self, kepts: list[Any]) -> SideBySide:
        """The pruned models of these kept vectors timed side by side with the unpruned model, at the latency batch."""
        assert self._shapes is not None
        x = self.example_input[:1].expand(self.options.latency_batch, *self.example_input.shape[1:]).contiguous()
        models = [self._shapes.prune_kept(k).eval() for k in kepts]
        return side_by_side(self._side_by_side_timer(), copy.deepcopy(self.model), models, x, rounds=3)

    def _evaluate_new(self, i: int) -> Callable[[list[tuple[Any, list[float]]], str], list[dict[str, Any]]]:
        """Scores (kept, actions) pairs found after the search (re-clipped policies) into new history records."""
        task = self.tasks[i]

        def evaluate(pairs: list[tuple[Any, list[float]]], phase: str) -> list[dict[str, Any]]:
            records = []
            for (kept, actions), scored in zip(pairs, task.score_many([k for k, _ in pairs])):
                info = {contract.REWARD: scored.reward, contract.METRICS: scored.record,
                        contract.POLICY: task.space.policy_of(kept),
                        contract.KEPT: {u.name: int(k) for u, k in zip(task.units, kept)},
                        contract.ACTIONS: list(actions), contract.BUDGET_USE: task.budget_use(kept),
                        contract.TIMING: {"prune": scored.evaluation.prune_seconds,
                                          "evaluate": scored.evaluation.evaluate_seconds},
                        contract.AGENT: {"phase": phase}}
                record = episode_record(len(self.history), info, scored.evaluation.prune_seconds
                                        + scored.evaluation.evaluate_seconds)
                if self.front:
                    record["point"] = i
                record["best_reward"] = max(self.history[-1].get("best_reward", record["reward"]), record["reward"])
                self.history.append(record)
                records.append(record)
            return records

        return evaluate

    def result(self) -> SearchResult:
        """The chosen policy (the last point's, for a front) and everything around it; ``front`` holds every point's."""
        assert self.task is not None
        choices = self.choices or self._unmeasured_choices()
        results = [self._result_of(c) for c in choices]
        if not results:
            dropped = " ".join(n for n in self.notes if n.startswith("front point"))
            raise AdcError(f"no point of the front {self.options.front} holds its budget: {dropped}" if dropped
                           else "no evaluated policy fits the budget; nothing to report")
        result = results[-1]
        if self.front:
            result.front = results
        self.callbacks.on_search_end(result)
        return result

    def _unmeasured_choices(self) -> list[dict[str, Any]]:
        """Each point's best-reward fitting policy (a search whose ``select`` was not run)."""
        choices = []
        for i, task in enumerate(self.tasks):
            best = best_fitting(self.history, task) if self.front else self.best
            if best:
                choices.append({"point": i, "record": best, "selection": [], "latency_hold": None})
        return choices

    def _result_of(self, choice: dict[str, Any]) -> SearchResult:
        assert self.task is not None
        chosen, point = choice["record"], self.points[choice["point"]]
        budget = ", ".join(str(b) for b in self.options.budgets_at(point))
        return SearchResult(
            policy=dict(chosen["policy"]), kept=dict(chosen["kept"]), metrics=dict(chosen["metrics"]),
            reward=float(chosen["reward"]), original=dict(self.task.original), history=self.history,
            graph=self.task.space.graph, interrupted=self.interrupted, failure=self.failure,
            selection=choice["selection"], episode=int(chosen["episode"]), notes=list(self.notes),
            calibration=dict(self.calibration_info), budget=budget,
            alignment=self.alignment,
            latency_hold=choice["latency_hold"], point=str(point) if point is not None else None,
            _evaluator=self.task.evaluator)

    def close(self) -> None:
        """Stop the workers."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> Search:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def search(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    evaluate: Score | None = None,
    calibration: Any = None,
    data: DataSplits | None = None,
    budget: Any = ("flops=0.5",),
    out: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    callbacks: Iterable[SearchCallback] = (),
    latency_table: LatencyTable | None = None,
    table_progress: Callable[[int, int, str], None] | None = None,
    timer: Timer | None = None,
    **options: Any,
) -> SearchResult:
    """Search the per-unit sparsity that maximises the reward under every budget.

    Args:
        model: The trained model (its weights are not modified).
        example_input: An input batch of the right shape.
        evaluate: ``evaluate(model)`` on held-out data, returning top-1 accuracy as a
            float, or a dict with ``top1`` (and any of ``top5``, ``loss``, ...); or give ``data``.
        calibration: Training images for batch-norm recalibration, data-driven
            criteria and reconstruction: a ``DataLoader``, a ``Dataset`` of
            ``(image, label)`` or a tensor of images. Needed with ``evaluate=``
            unless ``bn_calibration=0, reconstruct=False``.
        data: Data splits; the reward uses ``val_size`` images of the validation
            split, calibration the training split.
        budget: ``{"flops": 0.5}`` or ``["flops=0.5", "params=1M"]``.
        out: Folder for the checkpoint (``out/checkpoint``); ``resume=True`` continues it.
        progress: Called after each episode with ``(episode_record, best_record)``.
        callbacks: More :class:`~adc.engine.callbacks.SearchCallback` objects.
        latency_table: A ready table; otherwise one is measured when a latency budget or reward needs it.
        table_progress: ``(done, total, layer)`` while the latency table is measured.
        timer: Times models for ``round_to="auto"``, the latency table and the measured latency check
            (default: ``runtime`` on ``device``); tests pass a deterministic one.
        **options: Any field of :class:`~adc.engine.options.SearchOptions`
            (``agent``, ``episodes``, ``criterion``, ``reward``, ``seed``, ``workers``, ...).

    Returns:
        The :class:`SearchResult`; a search stopped by Ctrl-C or a failing plug-in
        returns what it found (``interrupted``, ``failure``).

    Raises:
        AdcError: on a bad setting or input, before any episode.
    """
    opts = SearchOptions(budget=budget, **options)
    with Search(model, example_input, opts, evaluate=evaluate, calibration=calibration, data=data, out=out,
                resume=resume, latency_table=latency_table, table_progress=table_progress,
                callbacks=[ProgressCallback(progress), *callbacks], timer=timer) as s:
        s.build()
        s.play()
        s.select()
        return s.result()

