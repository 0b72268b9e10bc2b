"""Latency budgets that hold when measured: the final candidates are timed for real, side by side.

A latency budget is met during the search by a per-layer table's prediction
(:mod:`adc.analysis.latency`). Predictions drift from the truth: layers
timed alone are not layers inside a network, and a runtime's fused or
re-laid-out graph is not the sum of its layers (on onnxruntime a budgeted
policy predicted at 0.60 of the original measured 1.06x). So before a
policy is handed back, the best distinct candidates are pruned and timed
end to end in the search's runtime, device, threads and batch, interleaved
with the unpruned model (:func:`adc.analysis.timers.side_by_side`), and only
those whose *measured* latency is within :data:`TOLERANCE` of the budget
(or faster) are kept.

When none is, the measurements teach a correction: the median of measured
over predicted latency of the candidates. The budget the clipping uses is
tightened by it (limit / correction), the best policies are replayed through
the tightened clipping (:meth:`ModelTask.play_actions`), evaluated, and
measured again; up to :data:`ROUNDS` times, each correction learned afresh
from the latest measurements. If still none holds, the search refuses in
one line rather than hand back a model that misses its budget.

When, the other way, the best candidate that holds is measured more than
:data:`SLACK` under the budget, the limit is loosened by the same kind of
factor (aiming a little under the budget; half way back if nothing replayed
there holds), and the replayed policies that hold join the candidates: a
model that leaves a tenth of its latency budget unused gives away accuracy.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adc.analysis.timers import SideBySide
from adc.engine.selection import distinct_best
from adc.envs.task import ModelTask
from adc.objective.budgets import Budget
from adc.utils.errors import AdcError
from adc.utils.formatting import seconds

TOLERANCE = 0.05
"""A measured latency up to this much over the budget holds it (timing noise on a shared CPU is a few percent)."""
ROUNDS = 3
"""Corrections tried when no candidate holds the budget."""
SLACK = 0.10
"""The best holding candidate measured this far under the budget: loosen the limit once to use it."""

Measure = Callable[[list[np.ndarray]], SideBySide]
"""Times the pruned models of these kept vectors side by side with the unpruned model."""
Evaluate = Callable[[list[tuple[np.ndarray, list[float]]], str], list[dict[str, Any]]]
"""Scores (kept vector, applied actions) pairs as new history records of the given phase."""


@dataclass
class LatencyHold:
    """What the measured check found (JSON-ready through :meth:`as_dict`).

    Attributes:
        budget: The budget as given (``latency=0.5`` or ``latency=12ms``).
        relative: Whether it is a fraction of the unpruned model.
        limit: The limit in seconds of the table's scale (``fraction x predicted original``, or the absolute amount).
        original_s: The unpruned model's measured seconds (median of the rounds).
        measured: One entry per candidate timed: ``episode``, ``predicted`` and ``measured``
            (seconds on the table's scale: the ratio to the unpruned model times its predicted latency for
            a relative budget), ``measured_ratio``, ``predicted_ratio``, ``holds``, ``round``.
        corrections: The measured / predicted factor learned in each correction round.
        info: Runtime, device, threads, batch.
    """

    budget: str
    relative: bool
    limit: float
    original_predicted: float
    original_s: float = 0.0
    measured: list[dict[str, Any]] = field(default_factory=list)
    corrections: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def holding(self) -> list[int]:
        """Episodes whose measured latency holds the budget."""
        return [m["episode"] for m in self.measured if m["holds"]]

    def of(self, episode: int) -> dict[str, Any] | None:
        """The measurement of one episode's policy (the last one when measured twice)."""
        found = [m for m in self.measured if m["episode"] == episode]
        return found[-1] if found else None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _latency_budget(task: ModelTask) -> Budget:
    return next(b for b in task.budgets if b.key == "latency")


def _with_limit(task: ModelTask, limit: float) -> ModelTask:
    """The task with its latency budget tightened to ``limit`` (the same prices, evaluator and reward)."""
    budgets = [dataclasses.replace(b, limit=limit) if b.key == "latency" else b for b in task.budgets]
    return dataclasses.replace(task, budgets=budgets)


def _judge(hold: LatencyHold, task: ModelTask, records: Sequence[dict[str, Any]], timed: SideBySide,
           round_: int) -> list[float]:
    """Record each candidate's measurement; return their measured / predicted factors."""
    budget = _latency_budget(task)
    names = [u.name for u in task.units]
    hold.original_s = timed.reference_s
    factors = []
    for record, ratio, secs in zip(records, timed.ratios, timed.candidate_s):
        kept = np.array([record["kept"][n] for n in names], dtype=np.float64)
        predicted = float(budget.price(kept))
        measured = ratio * hold.original_predicted if hold.relative else secs
        holds = measured <= hold.limit * (1 + TOLERANCE)
        hold.measured.append({"episode": int(record["episode"]), "predicted": predicted, "measured": float(measured),
                              "predicted_ratio": predicted / hold.original_predicted, "measured_ratio": float(ratio),
                              "measured_s": float(secs), "holds": bool(holds), "round": round_})
        factors.append(measured / max(predicted, 1e-15))
    return factors


def _replay(task: ModelTask, candidates: Sequence[dict[str, Any]], limit: float, evaluate: Evaluate,
            phase: str) -> list[dict[str, Any]]:
    """The candidates' actions replayed through clipping at another latency limit, evaluated as new records."""
    moved = _with_limit(task, limit)
    replayed: dict[tuple[int, ...], tuple[np.ndarray, list[float]]] = {}
    for record in candidates:
        kept, applied = moved.play_actions(record["actions"])
        replayed.setdefault(tuple(int(k) for k in kept), (kept, applied))
    return evaluate(list(replayed.values()), phase)


def hold_latency(task: ModelTask, history: Sequence[dict[str, Any]], *, budget_text: str, relative: bool,
                 top: int, measure: Measure, evaluate: Evaluate, info: dict[str, Any] | None = None) -> LatencyHold:
    """Measure the best candidates that fit ``task``'s budgets; correct and retry when none holds the latency budget.

    When the best candidate that holds is measured well under the budget (by more than :data:`SLACK`), the
    table was pessimistic: the limit is loosened by the measured / predicted factor, and the replayed
    policies join the candidates if they hold too (a budget the model does not use is accuracy given away).

    Args:
        task: The task whose budgets the candidates must meet (it has a latency budget).
        history: Every evaluated record (those that fit ``task`` are the candidates).
        budget_text: The latency budget as the user gave it (for messages).
        relative: Whether it is a fraction of the unpruned model.
        top: How many distinct best candidates to time.
        measure: Times pruned models side by side with the unpruned one.
        evaluate: Scores new kept vectors (re-clipped policies) into history records.
        info: Runtime, device, threads, batch (for the report).

    Returns:
        The :class:`LatencyHold`; ``holding()`` lists the episodes that hold.

    Raises:
        AdcError: when no candidate holds the budget after :data:`ROUNDS` corrections (one line).
    """
    budget = _latency_budget(task)
    hold = LatencyHold(budget_text, relative, float(budget.limit), float(budget.original), info=dict(info or {}))
    names = [u.name for u in task.units]
    candidates = distinct_best([r for r in history if task.fits(_kept(r, names))], names, top)
    if not candidates:
        raise AdcError(f"budget {budget_text}: no evaluated policy fits it")
    by_episode = {r["episode"]: r for r in candidates}

    def judge(records: list[dict[str, Any]], round_: int) -> list[float]:
        by_episode.update({r["episode"]: r for r in records})
        return _judge(hold, task, records, measure([_kept(r, names) for r in records]), round_)

    factors = judge(candidates, 0)
    for round_ in range(1, ROUNDS + 1):
        if hold.holding():
            break
        correction = max(statistics.median(factors), 1.0 + TOLERANCE / 2)
        hold.corrections.append(float(correction))
        factors = judge(_replay(task, candidates, budget.limit / correction, evaluate, "latency-fit"), round_)
    if not hold.holding():
        best = min(hold.measured, key=lambda m: m["measured"])
        what = (f"{best['measured_ratio']:.3f} of the unpruned model's latency" if relative
                else seconds(best["measured"]))
        raise AdcError(f"budget {budget_text} does not hold when measured: after {ROUNDS} corrections the fastest of "
                       f"{len(hold.measured)} candidates measured {what} in {hold.info.get('runtime', '?')} at batch "
                       f"{hold.info.get('batch', 1)} (the table predicted {best['predicted_ratio']:.3f}); give a "
                       "budget above that, or time on a quieter machine")
    _use_slack(hold, task, candidates, by_episode, evaluate, judge)
    return hold


def _use_slack(hold: LatencyHold, task: ModelTask, candidates: Sequence[dict[str, Any]],
               by_episode: dict[int, dict[str, Any]], evaluate: Evaluate,
               judge: Callable[[list[dict[str, Any]], int], list[float]]) -> None:
    """Loosen the limit when the best holding candidate leaves more than :data:`SLACK` of the budget unused.

    Aims a little under the budget (measured and predicted latency are rarely exactly proportional); if
    nothing replayed there holds, tries half way back once.
    """
    budget = _latency_budget(task)
    holding = [m for m in hold.measured if m["holds"]]
    chosen = max(holding, key=lambda m: by_episode[m["episode"]]["reward"])
    if chosen["measured"] >= hold.limit * (1 - SLACK):
        return
    correction = statistics.median(m["measured"] / max(m["predicted"], 1e-15) for m in holding)
    target = min(budget.limit * (1 - TOLERANCE / 2) / max(correction, 1e-3), budget.original * (1 - 1e-6))
    for limit in (target, (target + budget.limit) / 2):
        if limit <= budget.limit:
            return
        hold.corrections.append(float(budget.limit / limit))
        before = len(hold.holding())
        judge(_replay(task, candidates, limit, evaluate, "latency-use"), len(hold.corrections))
        if len(hold.holding()) > before:
            return


def _kept(record: dict[str, Any], names: Sequence[str]) -> np.ndarray:
    return np.array([record["kept"][n] for n in names], dtype=np.float64)
