"""Checks of a search's inputs that need the model but none of the costly work.

:class:`~adc.engine.options.SearchOptions` refuses what it can alone (types,
ranges, names, the budget's syntax). What needs the model -- is the budget
reachable, does the reward plug-in return a number on this model's metrics --
is checked here, right after the model is traced and before the
``round_to`` probe, the latency table, the reference model's training, the
worker pool or the first episode: a bad input costs a trace and one
evaluation of the unpruned model, and prints nothing before its one-line
error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from adc.analysis.graph import ModelGraph
from adc.analysis.space import PolicySpace
from adc.engine.options import SearchOptions
from adc.objective.budgets import BudgetSpec, resolve_budgets
from adc.objective.evaluator import Score, score_model
from adc.objective.metrics import MetricsRecorder
from adc.objective.rewards import check_reward, reward_label


def check_budgets(graph: ModelGraph, options: SearchOptions, points: Sequence[BudgetSpec | None] = (None,)) -> list:
    """Resolve every point's budgets that need no latency table, on the finest rounding the search may take.

    Rounding kept channels to a multiple only raises what the most pruned
    policy keeps, so a budget unreachable at ``round_to`` 1 is unreachable
    at the multiple ``auto`` would measure; an integer ``round_to`` is checked
    as given. Latency budgets need the measured table and are resolved with it.

    Returns:
        The first point's resolved budgets (for the metrics record of :func:`preflight`).

    Raises:
        AdcError: a budget above the unpruned model or below what maximal pruning reaches (one line).
    """
    round_to = options.round_to if isinstance(options.round_to, int) else 1
    space = PolicySpace(graph, min_keep=options.min_keep, round_to=round_to)
    first: list = []
    for i, point in enumerate(points):
        specs = [b for b in options.budgets_at(point) if b.key != "latency"]
        resolved = resolve_budgets(specs, space, energy_model=options.energy) if specs else []
        if i == 0:
            first = resolved
    return first


def preflight(graph: ModelGraph, options: SearchOptions, model: nn.Module, score: Score, *, source: str = "evaluate",
              points: Sequence[BudgetSpec | None] = (None,)) -> dict[str, float]:
    """Check the budgets (:func:`check_budgets`), score the unpruned model and check the reward on its record.

    A reward that reads the predicted latency is checked once the latency table is measured, instead.

    Args:
        graph: The traced model.
        options: The search's settings.
        model: The unpruned model (in eval mode, on the search's device).
        score: The reward's evaluation.
        source: How messages name the evaluation.
        points: The budget points (a front's, or ``[None]``).

    Returns:
        The unpruned model's accuracy metrics (what the search would compute next anyway).

    Raises:
        AdcError: an unreachable budget, an evaluation that fails, or a reward that raises or returns
            no finite number (one line each).
    """
    budgets = check_budgets(graph, options, points)
    metrics = score_model(score, model, source)
    if not options.needs_latency_table:
        record: dict[str, Any] = MetricsRecorder(graph, budgets, energy_model=options.energy).record(
            graph.channels, metrics)
        check_reward(options.reward_fn, record, label=reward_label(options.reward))
    return metrics
