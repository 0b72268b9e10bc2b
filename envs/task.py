"""The pruning task of one model: everything an episode needs, assembled once.

:class:`ModelTask` holds the policy space, the resolved budgets, the metrics
recorder, the reward and the :class:`~adc.objective.evaluator.Evaluator`. It
owns the action clipping (so the environment, the strategies and the tests
share one implementation) and scores finished policies, several at once when
the search runs workers. Building it is the expensive part (tracing the
model, ranking channels, collecting reconstruction statistics, scoring the
unpruned model); an environment on top of it is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from adc.analysis.cost import cost_of_kept
from adc.analysis.energy import EnergyModel
from adc.analysis.latency import LatencyTable
from adc.analysis.space import PolicySpace
from adc.objective.budgets import Budget, BudgetSpec, resolve_budgets
from adc.utils.bisection import smallest_fitting
from adc.objective.evaluator import Evaluation, Evaluator, Score
from adc.objective.metrics import MetricsRecorder
from adc.objective.rewards import Reward, check_reward, get_reward, reward_label
from adc.pruning.pruner import ChannelPruner
from adc.utils.errors import AdcError

EvaluateMany = Callable[[list[np.ndarray]], list[Evaluation]]
"""Scores several kept-channel vectors; results in the order given (a pool of workers, or one by one)."""

KIND_CODES = {"conv": 0.0, "depthwise": 1.0, "grouped": 2.0, "linear": 3.0}


@dataclass
class Scored:
    """A finished policy's score: the metrics record, the reward and the evaluation's timing."""

    record: dict[str, float]
    reward: float
    evaluation: Evaluation


@dataclass
class ModelTask:
    """One model's pruning task (see the module docs); satisfies :class:`~adc.envs.contract.PruningTask`.

    Attributes:
        space: Kept-channel bounds and rounding per unit.
        budgets: Resolved budgets; every policy meets all of them.
        recorder: Builds the metrics record of a policy.
        reward_fn: The reward, a function of the record.
        evaluator: Prunes, recalibrates and scores a policy.
        fill_budget: Raise actions so every policy uses its budget.
        original: The unpruned model's record.
        evaluate_many: Scores several policies (defaults to the evaluator, one by one).
        label: How messages name the reward.
    """

    space: PolicySpace
    budgets: list[Budget]
    recorder: MetricsRecorder
    reward_fn: Reward
    evaluator: Evaluator
    fill_budget: bool = True
    original: dict[str, float] = field(default_factory=dict)
    evaluate_many: EvaluateMany | None = None
    label: str = "reward"

    def __post_init__(self) -> None:
        if not self.budgets:
            raise AdcError("the task has no budget")
        graph = self.space.graph
        self.units = graph.units
        self.num_units = len(self.units)
        primary = self.budgets[0].key
        unit_cost = np.array([u.params if primary == "params" else u.macs for u in self.units], dtype=np.float64)
        full = cost_of_kept(graph, graph.channels)
        self.primary_total = float(full.params if primary == "params" else full.macs)
        self.primary_of = (lambda c: float(c.params)) if primary == "params" else (lambda c: float(c.macs))
        self.unit_share = unit_cost / max(self.primary_total, 1.0)
        self.cost_to_come = np.array([min(1.0, self.unit_share[i + 1:].sum()) for i in range(self.num_units)])
        static = np.array(
            [[u.index, KIND_CODES.get(u.kind, 0.0), u.in_channels, u.channels, u.stride, u.kernel, u.height, c]
             for u, c in zip(self.units, unit_cost)], dtype=np.float64)
        span = static.max(0) - static.min(0)
        self.static_features = np.where(span > 0, (static - static.min(0)) / np.where(span > 0, span, 1.0), 0.0)
        if self.evaluate_many is None:
            self.evaluate_many = lambda kepts: [self.evaluator(k) for k in kepts]

    # -- building ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        model: nn.Module,
        example_input: torch.Tensor,
        *,
        score: Score,
        budgets: Iterable[str | BudgetSpec | Budget],
        reward: str | Reward = "acc",
        criterion: str = "l1",
        round_to: int = 1,
        min_keep: float = 0.2,
        max_keep: float = 1.0,
        bn_images: torch.Tensor | None = None,
        calibration: Any = None,
        reconstruct: bool = False,
        fill_budget: bool = True,
        seed: int = 0,
        pruner: ChannelPruner | None = None,
        space: PolicySpace | None = None,
        latency_table: LatencyTable | None = None,
        energy_model: EnergyModel | None = None,
        source: str = "evaluate",
        unpruned_metrics: dict[str, float] | None = None,
    ) -> ModelTask:
        """Trace, rank and price the model; resolve the budgets; score the unpruned model.

        ``unpruned_metrics``: the unpruned model's accuracy metrics when the caller already scored it
        (the search's preflight), so it is not evaluated twice.

        Raises:
            AdcError: a model without prunable units, an unreachable budget, or an
                evaluation or reward that fails on the unpruned model.
        """
        pruner = pruner or ChannelPruner(model, example_input, criterion=criterion, round_to=round_to,
                                         calibration=calibration, reconstruct=reconstruct, seed=seed)
        pruner.graph.require_units()
        space = space or PolicySpace(pruner.graph, min_keep=min_keep, max_keep=max_keep, round_to=pruner.round_to)
        budgets = list(budgets)
        resolved = [b for b in budgets if isinstance(b, Budget)]
        specs = [b for b in budgets if not isinstance(b, Budget)]
        if specs or not resolved:
            resolved += resolve_budgets(specs, space, latency_table=latency_table, energy_model=energy_model)
        recorder = MetricsRecorder(pruner.graph, resolved, energy_model=energy_model, latency_table=latency_table)
        evaluator = Evaluator(pruner, score, bn_images=bn_images, source=source)
        reward_fn = get_reward(reward)
        label = reward_label(reward)
        metrics = evaluator.unpruned() if unpruned_metrics is None else unpruned_metrics
        original = recorder.record(pruner.graph.channels, metrics)
        check_reward(reward_fn, original, label=label)
        return cls(space, resolved, recorder, reward_fn, evaluator, fill_budget, original, label=label)

    # -- clipping ------------------------------------------------------------------------

    def fits(self, kept: np.ndarray) -> bool:
        """Whether ``kept`` meets every budget."""
        return all(b.price(kept) <= b.limit * (1 + 1e-9) for b in self.budgets)

    def fullest_use(self, kept: np.ndarray) -> float:
        """The largest cost / limit over the budgets."""
        return max(b.price(kept) / b.limit for b in self.budgets)

    def budget_use(self, kept: np.ndarray) -> dict[str, float]:
        """Cost / limit of every budget."""
        return {b.key: float(b.price(kept) / b.limit) for b in self.budgets}

    def clip(self, i: int, kept: np.ndarray, wanted: float) -> float:
        """Clip unit ``i``'s kept count so every budget stays reachable (and, optionally, gets used).

        Args:
            i: The unit being decided.
            kept: Kept counts so far (units after ``i`` are ignored).
            wanted: The kept count the action asks for.
        """
        floor, cap = self.kept_bounds(i, kept)
        return float(min(max(wanted, floor), cap))

    def kept_bounds(self, i: int, kept: np.ndarray) -> tuple[float, float]:
        """The fewest and most channels unit ``i`` may keep, given the units before it (see :meth:`clip`)."""
        choices = self.space.choices[i]
        trial = kept.copy()
        trial[i + 1:] = self.space.min_kept[i + 1:]
        # Largest choice that still fits with every later unit at its minimum (binary search: cost is monotone).
        lo, hi = 0, len(choices) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            trial[i] = choices[mid]
            if self.fits(trial):
                lo = mid
            else:
                hi = mid - 1
        cap = choices[lo]
        floor = choices[0]
        if self.fill_budget:
            # Smallest choice that can still reach the budget with every later unit kept whole.
            trial[i + 1:] = self.space.max_kept[i + 1:]
            lo, hi = 0, len(choices) - 1
            while lo < hi:
                mid = (lo + hi) // 2
                trial[i] = choices[mid]
                if self.fullest_use(trial) >= 1.0 - 1e-9:
                    hi = mid
                else:
                    lo = mid + 1
            floor = choices[lo]
        # Where filling one budget would break another, fitting wins: the interval is the cap alone.
        return float(min(floor, cap)), float(cap)

    def action_bounds(self, i: int, kept: np.ndarray) -> tuple[float, float]:
        """The lowest and highest action unit ``i`` may apply, given the units before it (the clipping's interval)."""
        floor, cap = self.kept_bounds(i, kept)
        channels = self.units[i].channels
        return self.space.action_of(1.0 - cap / channels), self.space.action_of(1.0 - floor / channels)

    def decide(self, i: int, kept: np.ndarray, action: Any) -> tuple[float, float]:
        """The kept count of unit ``i`` for a raw action, clipped; and the action that corresponds to it."""
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        unit = self.units[i]
        wanted = unit.kept(self.space.sparsity_of(a if np.isfinite(a) else 0.0), self.space.round_to)
        k = self.clip(i, kept, float(np.clip(wanted, self.space.min_kept[i], self.space.max_kept[i])))
        return k, self.space.action_of(1.0 - k / unit.channels)

    def play_actions(self, actions: Sequence[float]) -> tuple[np.ndarray, list[float]]:
        """The policy one episode with these actions prunes to: ``(kept per unit, applied actions)``.

        Exactly what stepping an environment applies, without pruning or evaluating (cheap).
        """
        if len(actions) != self.num_units:
            raise AdcError(f"play_actions needs {self.num_units} actions (one per unit), got {len(actions)}")
        kept = self.space.graph.channels.copy()
        applied = []
        for i, a in enumerate(actions):
            kept[i], action = self.decide(i, kept, a)
            applied.append(action)
        return kept, applied

    # -- scoring -------------------------------------------------------------------------

    def score_many(self, kepts: list[np.ndarray]) -> list[Scored]:
        """Prune, recalibrate and score several policies (at once with workers); their records and rewards.

        Raises:
            AdcError: when the evaluation or the reward fails or returns a non-finite number.
        """
        assert self.evaluate_many is not None
        scored = []
        for kept, evaluation in zip(kepts, self.evaluate_many([np.asarray(k, dtype=np.float64) for k in kepts])):
            record = self.recorder.record(kept, evaluation.metrics)
            reward = check_reward(self.reward_fn, record, label=self.label, when="on a pruned candidate")
            scored.append(Scored(record, reward, evaluation))
        return scored

    # -- the PruningTask protocol ----------------------------------------------------------

    def uniform_actions(self) -> list[float]:
        """The single action for every unit whose policy comes closest to the budget without exceeding it."""
        if self.budget_fits([0.0] * self.num_units):
            return [0.0] * self.num_units
        return [smallest_fitting(lambda a: self.budget_fits([a] * self.num_units), 0.0, 1.0)] * self.num_units

    def unit_costs(self) -> list[float]:
        """Each unit's share of the first budget's cost (MACs or params) that depends on it."""
        return [float(x) for x in self.unit_share]

    def budget_fits(self, actions: Sequence[float]) -> bool:
        """Whether raw actions meet every budget."""
        return self.fits(self.space.kept_of_actions(actions))

    def resource(self, actions: Sequence[float]) -> float:
        """The first budget's cost of raw actions over its limit (latency through the measured table)."""
        first = self.budgets[0]
        return float(first.price(self.space.kept_of_actions(actions)) / first.limit)

    def threshold_actions(self, threshold: float) -> list[float]:
        """Per unit, the action pruning the channels whose criterion score is below ``threshold`` x the unit's mean.

        The scores are the pruner's (the ones that rank the channels), so the
        channels a threshold prunes are exactly those the pruner drops. Grouped
        units score each position inside a group by its sum over the groups.
        """
        actions = []
        for i, unit in enumerate(self.units):
            scores = np.asarray(self.evaluator.pruner.scores[unit.name], dtype=np.float64)
            groups = unit.channel_groups
            if groups > 1:
                scores = scores.reshape(groups, -1).sum(0)
            scores = scores / max(float(scores.mean()), 1e-300)
            wanted = groups * int(np.sum(scores >= threshold)) if threshold > 0 else unit.channels
            choices = self.space.choices[i]
            kept = choices[min(int(np.searchsorted(choices, wanted)), len(choices) - 1)]
            actions.append(self.space.action_of(1.0 - kept / unit.channels))
        return actions

    def evaluate_actions(self, batch: Sequence[Sequence[float]]) -> list[float]:
        """Rewards of policies given as raw actions, WITHOUT budget clipping (sensitivity analysis)."""
        return [s.reward for s in self.score_many([self.space.kept_of_actions(a) for a in batch])]
