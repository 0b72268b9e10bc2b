"""The contract between the pruning environments and the agents.

Agents see an environment only through this module: the ``info`` keys it
reports (constants below, so a typo is an import error, not a silent
``None``) and :class:`PruningTask`, the few questions a strategy may ask
about the task besides stepping it (what the uniform policy is, what each unit
costs, whether raw actions fit the budget, how much of the first budget they
use, which actions a global threshold on the channel scores gives, what some
policies score). Every
environment of adc -- :class:`~adc.envs.pruning_env.PruningEnv`, and the
synthetic one of the tests -- provides them as its ``task``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

APPLIED_ACTION = "applied_action"
"""Every step: the action that corresponds to what was really applied (after clipping and rounding)."""
UNIT = "unit"
"""Every step: the unit just decided."""
KEPT_CHANNELS = "kept_channels"
"""Every step: channels kept in that unit."""
REWARD = "reward"
"""Last step: the episode's reward (also the step's reward)."""
ACTIONS = "actions"
"""Last step: the applied action of every unit, in order."""
POLICY = "policy"
"""Last step: unit name -> sparsity."""
KEPT = "kept"
"""Last step: unit name -> channels kept."""
METRICS = "metrics"
"""Last step: the metrics record (accuracy, costs and ratios)."""
BUDGET_USE = "budget_use"
"""Last step: cost / limit of every budget (at most 1)."""
TIMING = "timing"
"""Last step: seconds spent pruning and evaluating."""
WORKER = "worker"
"""Last step: which worker evaluated the policy (0 to workers - 1)."""
AGENT = "agent"
"""Added by agents to a final info: phase, sigma, worker and the like."""


@runtime_checkable
class PruningTask(Protocol):
    """What a strategy may ask of the pruning task besides stepping episodes."""

    num_units: int

    def uniform_actions(self) -> list[float]:
        """One action for every unit: the uniform policy that comes closest to the budget without exceeding it."""

    def unit_costs(self) -> list[float]:
        """Each unit's share of the first budget's cost (what pruning it all the way could save)."""

    def budget_fits(self, actions: Sequence[float]) -> bool:
        """Whether raw actions (one per unit, not clipped) meet every budget."""

    def resource(self, actions: Sequence[float]) -> float:
        """The first budget's cost of raw actions (not clipped) over its limit: at most 1 meets it.

        The resource a greedy strategy lowers step by step (NetAdapt): FLOPs,
        parameters, energy, or latency priced by the measured latency table.
        """

    def threshold_actions(self, threshold: float) -> list[float]:
        """The actions that prune, in every unit, the channels scoring below ``threshold`` (not clipped).

        Scores are the channel criterion's, divided by their mean over the unit so
        that one threshold means the same in every unit (a global threshold, as in
        Network Slimming). Non-decreasing in ``threshold``; 0 prunes nothing; each
        unit stops at its largest allowed sparsity.
        """

    def evaluate_actions(self, batch: Sequence[Sequence[float]]) -> list[float]:
        """Rewards of several policies given as raw actions, without budget clipping (sensitivity probes).

        Evaluated together, so a parallel search scores them at the same time.
        """
