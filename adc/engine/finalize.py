"""The end of a search: each point's policy chosen, a latency budget checked on the real models.

:func:`choose` picks, for every point (one, or a front's), the policy a
search hands back: among the candidates whose measured latency holds a
latency budget (:mod:`adc.engine.latency_hold`), the best on held-out
images (:mod:`adc.engine.selection`), else the best reward. Policies the
latency check re-clips are scored into the history as new records.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from adc.analysis.timers import SideBySide, side_by_side
from adc.engine.front import fitting, kept_of
from adc.engine.latency_hold import LatencyHold, hold_latency
from adc.engine.options import SearchOptions
from adc.engine.records import Record, episode_record
from adc.engine.selection import select_on_holdout
from adc.engine.space import SpaceSetup
from adc.envs import contract
from adc.envs.task import ModelTask
from adc.utils.errors import AdcError


class Finalizer:
    """Chooses each point's policy (see the module docs).

    Args:
        model, example_input: The unpruned model and an input batch (the latency check times copies).
        options: The settings.
        space: The search's space (its points, pruner of shapes and side-by-side timer).
        tasks: One task per point.
        history: The search's records (re-clipped policies are appended).
        evaluate_holdout: Scores kept vectors on the held-out images (None: no final selection).
        front: Whether the points are a front's (a point that cannot hold is dropped, not fatal).
        note: Tells the user.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, options: SearchOptions, space: SpaceSetup,
                 tasks: list[ModelTask], history: list[Record],
                 evaluate_holdout: Callable[[list[np.ndarray]], list[Any]] | None, *, front: bool,
                 note: Callable[[str], None]) -> None:
        self.model, self.example_input, self.options, self.space = model, example_input, options, space
        self.tasks, self.history, self.evaluate_holdout = tasks, history, evaluate_holdout
        self.front, self.note = front, note

    def choose(self, *, failed: bool, interrupted: bool) -> list[dict[str, Any]]:
        """Each point's choice: ``{"point", "record", "selection", "latency_hold"}``.

        A failed search skips the latency check, an interrupted one the held-out re-scoring.

        Raises:
            AdcError: when no candidate's measured latency holds a latency budget (one line).
        """
        o = self.options
        choices = []
        for i, task in enumerate(self.tasks):
            try:
                hold = self._hold_latency(i, task) if not failed else None
            except AdcError as exc:
                if not self.front:
                    raise
                self.note(f"front point {self.space.points[i]} dropped: {exc}")
                continue
            names = [u.name for u in task.units]
            pool_records = fitting(self.history, task)
            if hold is not None:
                held = set(hold.holding())
                pool_records = [r for r in self.history if r["episode"] in held]
            if not pool_records:
                continue
            selection = []
            if self.evaluate_holdout is not None and not interrupted and o.select_top > 1:
                selection = select_on_holdout(task, self.evaluate_holdout, pool_records, top=o.select_top)
            chosen = (self.history[selection[0]["episode"]] if selection
                      else max(pool_records, key=lambda r: r["reward"]))
            # Every budget holds: by the exact costs, and a latency budget by measurement (the table may disagree).
            kept = kept_of(chosen, names)
            assert all(b.price(kept) <= b.limit * (1 + 1e-9) for b in task.budgets
                       if hold is None or b.key != "latency")
            choices.append({"point": i, "record": chosen, "selection": selection,
                            "latency_hold": hold.as_dict() if hold is not None else None})
        return choices

    def _hold_latency(self, i: int, task: ModelTask) -> LatencyHold | None:
        """The measured latency check of point ``i`` (None without a latency budget)."""
        o = self.options
        spec = next((b for b in o.budgets_at(self.space.points[i]) if b.key == "latency"), None)
        if spec is None:
            return None
        timer = self.space.side_by_side_timer()
        info = {"runtime": timer.runtime, "device": timer.device, "threads": timer.threads, "batch": o.latency_batch,
                "clock": getattr(timer, "clock", "wall")}
        return hold_latency(task, self.history, budget_text=str(spec), relative=spec.relative,
                            top=max(3, o.select_top), measure=self._measure, evaluate=self._evaluate_new(i), info=info)

    def _measure(self, kepts: list[Any]) -> SideBySide:
        """The pruned models of these kept vectors timed side by side with the unpruned model, at the latency batch."""
        assert self.space.shapes is not None
        x = self.example_input[:1].expand(self.options.latency_batch, *self.example_input.shape[1:]).contiguous()
        models = [self.space.shapes.prune_kept(k).eval() for k in kepts]
        return side_by_side(self.space.side_by_side_timer(), copy.deepcopy(self.model), models, x, rounds=3)

    def _evaluate_new(self, i: int) -> Callable[[list[tuple[Any, list[float]]], str], list[Record]]:
        """Scores (kept, actions) pairs found after the search (re-clipped policies) into new history records."""
        task = self.tasks[i]

        def evaluate(pairs: list[tuple[Any, list[float]]], phase: str) -> list[Record]:
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
