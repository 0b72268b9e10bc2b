"""The final selection: re-score the best distinct policies on held-out images, keep the best there.

The best of hundreds of rewards, each measured on a fixed subset of the
validation images, is biased upward: the winner is partly the luckiest. A
second, unbiased look at a few of the best candidates, on validation images
the reward never saw, removes most of that bias (``benchmarks/results``
shows how much it changes the pick).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adc.envs.task import ModelTask
from adc.objective.rewards import check_reward

MIN_HOLDOUT = 500
"""Fewest held-out validation images worth a final selection (a standard error of about 1.3 points at 90%)."""


def distinct_best(history: list[dict[str, Any]], unit_names: list[str], top: int) -> list[dict[str, Any]]:
    """The ``top`` best records by reward, one per distinct policy (kept channels)."""
    seen: set[tuple[int, ...]] = set()
    candidates: list[dict[str, Any]] = []
    for record in sorted(history, key=lambda r: r["reward"], reverse=True):
        kept = tuple(int(record["kept"][u]) for u in unit_names)
        if kept not in seen:
            seen.add(kept)
            candidates.append(record)
        if len(candidates) == top:
            break
    return candidates


def select_on_holdout(task: ModelTask, evaluate: Any, history: list[dict[str, Any]], *, top: int) -> list[dict[str, Any]]:
    """Re-score the ``top`` best distinct policies of ``history``; best first by the held-out reward.

    Each candidate is pruned, reconstructed and recalibrated as in an episode;
    only the images it is scored on change, so the reward is the same
    function of an unbiased accuracy estimate.

    Args:
        task: The search's task (records and reward).
        evaluate: ``evaluate(kepts) -> evaluations`` with the held-out scoring (a pool, all candidates at once).
        history: The search's episodes.
        top: How many candidates.

    Returns:
        One entry per candidate (``episode``, ``reward``, ``holdout_reward``,
        ``holdout_top1``); [] when there are fewer than two distinct candidates.
    """
    names = [u.name for u in task.units]
    candidates = distinct_best(history, names, top)
    if len(candidates) < 2:
        return []
    kepts = [np.array([r["kept"][u] for u in names], dtype=np.float64) for r in candidates]
    scored = []
    for record, kept, evaluation in zip(candidates, kepts, evaluate(kepts)):
        metrics = task.recorder.record(kept, evaluation.metrics)
        reward = check_reward(task.reward_fn, metrics, label=task.label, when="in the final selection")
        scored.append({"episode": int(record["episode"]), "reward": float(record["reward"]),
                       "holdout_reward": float(reward), "holdout_top1": float(metrics["top1"])})
    return sorted(scored, key=lambda c: c["holdout_reward"], reverse=True)
