"""The accuracy-cost front in one search: a budget range (``--budget latency=0.3:0.9``) gives one model per point.

A range's points are searched tightest first, each with its share of the
episodes (:func:`split_episodes`) and its own agent, on one task whose
evaluator, pruner and latency table are built once. Evaluations are cached
by kept-channel vector (:class:`EvaluationCache`): a policy played again --
by a later point, an exploitation or refinement episode -- is not pruned
and scored again. Each point then takes the best evaluated policy whose
costs fit its budgets, from *every* point's episodes (:func:`fitting`): a
policy found for a tight point also serves the looser ones, so a loose
point is never worse than a tighter one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from adc.envs.task import ModelTask
from adc.objective.budgets import BudgetSpec
from adc.objective.evaluator import Evaluation


def split_episodes(episodes: int, points: int) -> list[int]:
    """``episodes`` shared over ``points``, as evenly as possible (the earlier, tighter points get the remainder)."""
    base, extra = divmod(int(episodes), int(points))
    return [base + (1 if i < extra else 0) for i in range(points)]


def point_name(spec: BudgetSpec) -> str:
    """The file stem of a point's model: ``latency-0.45``."""
    return f"{spec.key}-{spec.value:g}"


def kept_of(record: dict[str, Any], names: Sequence[str]) -> np.ndarray:
    """A history record's kept channels as a vector (unit order)."""
    return np.array([record["kept"][n] for n in names], dtype=np.float64)


def fitting(history: Sequence[dict[str, Any]], task: ModelTask) -> list[dict[str, Any]]:
    """The records whose policy meets every budget of ``task`` (in history order)."""
    names = [u.name for u in task.units]
    return [r for r in history if task.fits(kept_of(r, names))]


def best_fitting(history: Sequence[dict[str, Any]], task: ModelTask) -> dict[str, Any]:
    """The record with the highest reward among those fitting ``task`` (the earliest on ties); {} when none fits."""
    best: dict[str, Any] = {}
    for record in fitting(history, task):
        if not best or record["reward"] > best["reward"]:
            best = record
    return best


class EvaluationCache:
    """Evaluations memoised by (scoring, kept channels): an evaluation is a deterministic function of both.

    Args:
        evaluate: ``evaluate(kepts, score)`` (a worker pool's).
    """

    def __init__(self, evaluate: Callable[..., list[Evaluation]]) -> None:
        self._evaluate = evaluate
        self._done: dict[tuple[str, tuple[int, ...]], Evaluation] = {}
        self.hits = 0

    def __call__(self, kepts: list[np.ndarray], score: str = "search") -> list[Evaluation]:
        keys = [(score, tuple(int(k) for k in kept)) for kept in kepts]
        todo: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
        for key, kept in zip(keys, kepts):
            if key not in self._done:
                todo.setdefault(key, kept)
        if todo:
            for key, evaluation in zip(todo, self._evaluate(list(todo.values()), score)):
                self._done[key] = evaluation
        self.hits += len(keys) - len(todo)
        return [self._done[key] for key in keys]
