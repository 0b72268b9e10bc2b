"""The search loop, a short orchestrator of its phases; and :func:`search`, the one-call API.

:class:`Search` runs one search in three calls. :meth:`Search.build` gathers
the scoring (:mod:`adc.engine.evaluation`), traces the model, checks the
inputs that need it (:mod:`adc.engine.preflight`), resolves the space --
rounding, latency table, budgets (:mod:`adc.engine.space`) -- and builds the
task, the worker pool, the environments and the agent (or the agent of a
checkpoint, to resume). :meth:`Search.play` plays the agent's phases
(:mod:`adc.engine.phases`) in rounds of N episodes, telling its callbacks
(progress, checkpoints, TensorBoard) after every episode and round.
:meth:`Search.select` chooses each point's policy (:mod:`adc.engine.finalize`)
and :meth:`Search.result` hands it back. Writing the run folder is the run
layer's job (:mod:`adc.run.pipeline`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from adc.agents import AGENTS, Agent, make_agent
from adc.analysis.graph import analyze
from adc.analysis.latency import LatencyTable
from adc.analysis.timers import Timer
from adc.engine.callbacks import CallbackList, CheckpointCallback, ProgressCallback, SearchCallback
from adc.engine.checkpoint import Checkpoint
from adc.engine.evaluation import EvaluationInputs, evaluation_inputs
from adc.engine.finalize import Finalizer
from adc.engine.front import EvaluationCache, best_fitting, split_episodes
from adc.engine.interrupt import DeferredInterrupt
from adc.engine.options import SearchOptions
from adc.engine.phases import default_refine_episodes, phase_plan, play_phases
from adc.engine.preflight import preflight
from adc.engine.records import Record, episode_record
from adc.engine.result import SearchResult
from adc.engine.space import SpaceSetup
from adc.engine.workers import InProcessPool, RayPool, make_pool
from adc.envs.pruning_env import PruningEnv
from adc.envs.task import ModelTask
from adc.envs.vec_env import PruningVecEnv
from adc.inputs.data import DataSplits
from adc.objective.evaluator import Score
from adc.pruning.pruner import ChannelPruner
from adc.utils.device import check_device, torch_threads
from adc.utils.errors import AdcError

__all__ = ["Search", "default_refine_episodes", "episode_record", "phase_plan", "search"]

RESUME_MAY_CHANGE = frozenset({"threads", "ray_address", "checkpoint_every", "gpus_per_worker", "eval_batch_size",
                               "cache_dir", "resolved_round_to"})
"""Settings a resumed search may change: they do not change which policies it plays (the rounding an
``auto`` search measured is read back from the checkpoint, not measured again)."""


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
        if options.front and resume:
            raise AdcError(f"--resume: a front search ({options.front}) cannot be resumed; run it again")
        self.model, self.example_input, self.options = model, example_input, options
        self.evaluate, self.calibration, self.data = evaluate, calibration, data
        self.checkpoint = Checkpoint(Path(out) / "checkpoint") if out is not None else None
        self.resume = resume
        self.space = SpaceSetup(model, example_input, options, latency_table=latency_table, timer=timer,
                                table_progress=table_progress, note=self.note)
        self.inputs: EvaluationInputs | None = None
        self.tasks: list[ModelTask] = []
        self.task: ModelTask | None = None
        self.pool: InProcessPool | RayPool | None = None
        self.envs: PruningVecEnv | None = None
        self.agent: Agent | None = None
        self.history: list[Record] = []
        self.best: Record = {}
        self.notes: list[str] = []
        self.interrupted = False
        self.failure: str | None = None
        self.choices: list[dict[str, Any]] = []
        self._point = 0
        self._interrupt = DeferredInterrupt(self.note)
        checkpoints = self.checkpoint is not None and not options.front
        self._checkpointer = CheckpointCallback(self.checkpoint, options.checkpoint_every) if checkpoints else None
        self.callbacks = CallbackList([*([self._checkpointer] if self._checkpointer else []), *callbacks])

    # -- what the run layer and the callbacks read --------------------------------------------

    @property
    def front(self) -> bool:
        """Whether this search hands back a front of models (a budget range)."""
        return self.options.front is not None

    @property
    def points(self) -> list[Any]:
        """The budget points: a front's, or ``[None]``."""
        return self.space.points

    @property
    def round_to(self) -> int | None:
        """The channel multiple the search plays with (resolved by :meth:`build`)."""
        return self.space.round_to

    @property
    def alignment(self) -> dict[str, Any] | None:
        """The ``round_to auto`` probe's measurements and choice."""
        return self.space.alignment

    @property
    def latency_table(self) -> LatencyTable | None:
        """The latency table the search prices with (None: none needed)."""
        return self.space.latency_table

    @property
    def selection(self) -> list[dict[str, Any]]:
        """The final selection of the result's policy (the last point's)."""
        return self.choices[-1]["selection"] if self.choices else []

    def note(self, text: str, *, show: bool = True) -> None:
        """Tell the user something about how the search runs (callbacks print it; the result keeps it).

        ``show=False``: kept in the result (its report and ``policy.json``) without being printed: how a
        default adapted to the model or data, which a first run need not read.
        """
        self.notes.append(text)
        if show:
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

    # -- build -----------------------------------------------------------------------

    def build(self) -> None:
        """Everything before the first episode: scoring, trace, checks, space, task, workers, agent.

        Raises:
            AdcError: on anything the search cannot work with (no training images, an
                unreachable budget, a failing evaluation or reward, a changed setting on resume, ...).
        """
        o = self.options
        dev = check_device(o.device)
        self.model = self.space.model = self.model.to(dev).eval()
        self.example_input = self.space.example_input = self.example_input.to(dev)
        if self.resume:
            self._load_history()
        inputs = self.inputs = evaluation_inputs(self.model, o, str(dev), data=self.data, evaluate=self.evaluate,
                                                 calibration=self.calibration, note=self.note)
        graph = analyze(self.model, self.example_input)
        graph.require_units()
        # Budgets and the reward refused here cost a trace and one evaluation: no probe, table or pool yet.
        unpruned = preflight(graph, o, self.model, inputs.score, source=inputs.source, points=self.points)
        space = self.space.resolve(graph)
        pruner = ChannelPruner(self.model, self.example_input, criterion=o.criterion, round_to=space.round_to,
                               calibration=inputs.batches, reconstruct=inputs.reconstruct, seed=o.seed, graph=graph)
        self.task = ModelTask.build(
            self.model, self.example_input, score=inputs.score, budgets=self.space.point_budgets[0], reward=o.reward,
            fill_budget=o.fill_budget, bn_images=inputs.bn_images, pruner=pruner, space=space,
            latency_table=self.latency_table, energy_model=o.energy, source=inputs.source, unpruned_metrics=unpruned)
        self.tasks = [self.task, *[dataclasses.replace(self.task, budgets=b) for b in self.space.point_budgets[1:]]]
        self.pool = make_pool(self.task.evaluator, workers=o.workers, address=o.ray_address, device=o.device,
                              threads=o.threads, gpus_per_worker=o.gpus_per_worker)
        evaluate = EvaluationCache(self.pool.evaluate) if self.front else self.pool.evaluate
        for task in self.tasks:
            task.evaluate_many = evaluate
        if inputs.holdout is not None:
            self.pool.add_score("holdout", inputs.holdout, "the held-out validation images")
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

    def _load_history(self) -> None:
        if self.checkpoint is None:
            raise AdcError("resume needs the folder of the interrupted search (out=...)")
        self.history = self.checkpoint.history()
        saved = self.checkpoint.settings()
        if isinstance(saved.get("resolved_round_to"), int):
            self.space.saved_round_to = int(saved["resolved_round_to"])
            self.space.alignment = saved.get("alignment")
        mine = self.checkpoint_settings()
        for key, value in mine.items():
            if key in saved and saved[key] != _jsonable(value):
                raise AdcError(f"resume: {('--' + key.replace('_', '-'))} {_jsonable(value)!r} differs from the "
                               f"interrupted search's {saved[key]!r}; a resumed search keeps its settings")
        self.best = max(self.history, key=lambda r: r["reward"]) if self.history else {}

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
                    assert self.agent is not None and self.envs is not None
                    play_phases(self.agent, self.envs, o, episodes=episodes, start=start, history=self.history,
                                on_episode=self._on_episode, on_round=self._on_round, going=self._going,
                                best=lambda: self.best, best_of=self._best_of)
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

    def _best_of(self, rows: list[Record]) -> Record:
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
        assert self.pool is not None and self.inputs is not None
        pool = self.pool
        holdout = (lambda kepts: pool.evaluate(kepts, "holdout")) if self.inputs.holdout is not None else None
        finalizer = Finalizer(self.model, self.example_input, self.options, self.space, self.tasks, self.history,
                              holdout, front=self.front, note=self.note)
        with torch_threads(self.options.threads):
            self.choices = finalizer.choose(failed=self.failure is not None, interrupted=self.interrupted)

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
        assert self.task is not None and self.inputs is not None
        chosen, point = choice["record"], self.points[choice["point"]]
        budget = ", ".join(str(b) for b in self.options.budgets_at(point))
        return SearchResult(
            policy=dict(chosen["policy"]), kept=dict(chosen["kept"]), metrics=dict(chosen["metrics"]),
            reward=float(chosen["reward"]), original=dict(self.task.original), history=self.history,
            graph=self.task.space.graph, interrupted=self.interrupted, failure=self.failure,
            selection=choice["selection"], episode=int(chosen["episode"]), notes=list(self.notes),
            calibration=dict(self.inputs.calibration), budget=budget,
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

