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

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from adc.agents import Agent, Refiner, make_agent
from adc.analysis.latency import LatencyTable, build_latency_table
from adc.analysis.space import PolicySpace
from adc.engine.callbacks import CallbackList, CheckpointCallback, ProgressCallback, SearchCallback
from adc.engine.checkpoint import Checkpoint
from adc.engine.interrupt import DeferredInterrupt
from adc.engine.options import DATA_CRITERIA, LABEL_CRITERIA, SearchOptions
from adc.engine.result import SearchResult
from adc.engine.selection import MIN_HOLDOUT, select_on_holdout
from adc.engine.workers import InProcessPool, RayPool, make_pool
from adc.envs import contract
from adc.envs.pruning_env import PruningEnv
from adc.envs.task import ModelTask
from adc.envs.vec_env import PruningVecEnv
from adc.inputs.calibration import calibration_set, fixed_images, image_range, labelled_batches
from adc.inputs.data import DataSplits
from adc.objective.evaluator import Score, ValidationScore
from adc.pruning.pruner import ChannelPruner
from adc.utils.device import check_device, torch_threads
from adc.utils.errors import AdcError

RESUME_MAY_CHANGE = frozenset({"threads", "ray_address", "checkpoint_every", "gpus_per_worker", "eval_batch_size",
                               "cache_dir"})
"""Settings a resumed search may change: they do not change which policies it plays."""


def phase_plan(episodes: int, workers: int, can_exploit: bool, exploit: int | None,
               refine: int | None) -> tuple[int, int, int]:
    """Episodes of exploration, exploitation and refinement.

    A learning agent exploits for its last tenth (``exploit``) before a tenth
    of refinement (``refine``); the explore and exploit phases are whole rounds
    of ``workers`` episodes, the refinement takes the rest.
    """
    if not can_exploit:
        return episodes, 0, 0
    n_exploit = max(1, episodes // 10) if exploit is None else max(0, min(episodes - 1, exploit))
    n_refine = max(1, episodes // 10) if refine is None else max(0, refine)
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
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, options: SearchOptions, *,
                 evaluate: Score | None = None, calibration: Any = None, data: DataSplits | None = None,
                 out: str | Path | None = None, resume: bool = False, latency_table: LatencyTable | None = None,
                 table_progress: Callable[[int, int, str], None] | None = None,
                 callbacks: Iterable[SearchCallback] = ()) -> None:
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
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.notes: list[str] = []
        self.agent: Agent | None = None
        self.task: ModelTask | None = None
        self.pool: InProcessPool | RayPool | None = None
        self.envs: PruningVecEnv | None = None
        self.interrupted = False
        self.failure: str | None = None
        self.selection: list[dict[str, Any]] = []
        self.calibration_info: dict[str, Any] = {}
        self._holdout = False
        self._interrupt = DeferredInterrupt(self.note)
        self._checkpointer = CheckpointCallback(self.checkpoint, options.checkpoint_every) if self.checkpoint else None
        base = [self._checkpointer] if self._checkpointer else []
        self.callbacks = CallbackList([*base, *callbacks])
        self._started = time.perf_counter()

    # -- notes -----------------------------------------------------------------------

    def note(self, text: str) -> None:
        """Tell the user something about how the search runs (callbacks print it; the result keeps it)."""
        self.notes.append(text)
        self.callbacks.on_note(text)

    def checkpoint_settings(self) -> dict[str, Any]:
        """The settings a checkpoint records, so a resumed search can refuse changed ones."""
        return {k: v for k, v in self.options.fields().items() if k not in RESUME_MAY_CHANGE}

    # -- build -----------------------------------------------------------------------

    def build(self) -> None:
        """Everything before the first episode: evaluation, pruner, space, latency table, task, workers, agent.

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
        pruner = ChannelPruner(self.model, self.example_input, criterion=o.criterion, round_to=o.round_to,
                               calibration=batches, reconstruct=reconstruct, seed=o.seed)
        space = PolicySpace(pruner.graph, min_keep=o.min_keep, round_to=o.round_to)
        if self.latency_table is None and o.needs_latency_table:
            self.latency_table = build_latency_table(
                self.model, self.example_input, space, prune_to=pruner.prune_kept, batch=o.latency_batch,
                runtime=o.runtime, device=o.device, threads=o.threads, cache_dir=o.cache_dir, progress=self.table_progress)
        self.task = ModelTask.build(
            self.model, self.example_input, score=score, budgets=o.budgets, reward=o.reward, fill_budget=o.fill_budget,
            bn_images=bn_images, pruner=pruner, space=space, latency_table=self.latency_table, energy_model=o.energy,
            source=source)
        self.pool = make_pool(self.task.evaluator, workers=o.workers, address=o.ray_address, device=o.device,
                              threads=o.threads, gpus_per_worker=o.gpus_per_worker)
        self.task.evaluate_many = self.pool.evaluate
        if self._holdout_score is not None:
            self.pool.add_score("holdout", self._holdout_score, "the held-out validation images")
            self._holdout = True
        task = self.task
        self.envs = PruningVecEnv.of(lambda: PruningEnv(task), o.workers)
        if self.resume:
            assert self.checkpoint is not None
            self.agent = self.checkpoint.agent(self.envs)
        else:
            self.agent = make_agent(o.agent, self.envs, episodes=o.episodes, seed=o.seed, **o.agent_options)
        self._note_agent_settings()

    def _load_history(self) -> None:
        if self.checkpoint is None:
            raise AdcError("resume needs the folder of the interrupted search (out=...)")
        self.history = self.checkpoint.history()
        saved = self.checkpoint.settings()
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
        """Play the agent's phases; a Ctrl-C or a failing plug-in stops them (what was played is kept)."""
        assert self.agent is not None and self.envs is not None
        o = self.options
        agent = self.agent
        explore, exploit, refine = phase_plan(o.episodes, o.workers, agent.can_exploit, o.exploit_episodes,
                                              o.refine_episodes)
        self.callbacks.on_search_start(self)
        self._last = time.perf_counter()
        self._round_start = len(self.history)
        clean = True
        with self._interrupt, torch_threads(o.threads):
            try:
                if len(self.history) < explore:
                    agent.run(explore - len(self.history), self._on_episode, explore=True, on_round=self._on_round)
                if self._going() and exploit and len(self.history) < explore + exploit:
                    agent.run(explore + exploit - len(self.history), self._on_episode, explore=False,
                              on_round=self._on_round)
                if self._going() and refine and len(self.history) < o.episodes:
                    refiner = Refiner(self.envs, lambda: self.best, episodes=refine, seed=o.seed + explore + exploit,
                                      done=len(self.history) - explore - exploit)
                    refiner.run(o.episodes - len(self.history), self._on_episode, on_round=self._on_round)
            except KeyboardInterrupt:
                self.interrupted, clean = True, False
            except AdcError as exc:
                self.failure, clean = f"episode {len(self.history)}: {exc}", False
        self.interrupted = self.interrupted or self._interrupt.requested or self.failure is not None
        if clean and self._checkpointer is not None:
            self._checkpointer.save(self)
        if not self.history:
            raise AdcError(self.failure or "the search was interrupted before its first episode finished; nothing to report")

    def _going(self) -> bool:
        return not self._interrupt.requested

    # -- select and result -------------------------------------------------------------

    def select(self) -> None:
        """Re-score the best distinct policies on held-out validation images (skipped after an interruption)."""
        if not self._holdout or self.interrupted or self.options.select_top <= 1:
            return
        assert self.pool is not None and self.task is not None
        pool = self.pool
        with torch_threads(self.options.threads):
            self.selection = select_on_holdout(self.task, lambda kepts: pool.evaluate(kepts, "holdout"), self.history,
                                               top=self.options.select_top)

    def result(self) -> SearchResult:
        """The chosen policy (the selection's pick, else the best reward) and everything around it."""
        assert self.task is not None
        chosen = self.history[self.selection[0]["episode"]] if self.selection else self.best
        result = SearchResult(
            policy=dict(chosen["policy"]), kept=dict(chosen["kept"]), metrics=dict(chosen["metrics"]),
            reward=float(chosen["reward"]), original=dict(self.task.original), history=self.history,
            graph=self.task.space.graph, interrupted=self.interrupted, failure=self.failure, selection=self.selection,
            episode=int(chosen["episode"]), notes=list(self.notes), calibration=dict(self.calibration_info),
            _evaluator=self.task.evaluator)
        self.callbacks.on_search_end(result)
        return result

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
                callbacks=[ProgressCallback(progress), *callbacks]) as s:
        s.build()
        s.play()
        s.select()
        return s.result()

