"""``global``: one threshold on the normalised channel criterion across all units (Network Slimming).

Network Slimming (Liu et al., ICCV 2017) prunes every channel whose batch-norm
scale falls below one global threshold, chosen for the target size: the
layers' widths follow from a single number instead of being searched. Here
the criterion is the search's (``--criterion``, ``bn_scale`` for Slimming
itself), each unit's scores divided by their mean so that one threshold means
the same in every unit (:meth:`~adc.envs.contract.PruningTask.threshold_actions`).
The threshold is solved by bisection so that the policy meets the budget as
tightly as the channel counts allow; the environment's clipping fills what is
left. It costs no evaluation before the one episode it plays.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from adc.agents.base import Agent, OnEpisode, OnRound, register_agent
from adc.utils.bisection import smallest_fitting
from adc.envs.vec_env import PruningVecEnv


@dataclasses.dataclass(frozen=True)
class GlobalOptions:
    """Settings of the global-threshold strategy.

    Attributes:
        bisection_steps: Halvings of the threshold interval (the budget check is cheap: no evaluation).
    """

    bisection_steps: int = 60


@register_agent("global")
class GlobalThresholdAgent(Agent):
    """The smallest global threshold whose policy meets every budget, played once (see the module docs).

    Deterministic: one episode in all, whatever ``episodes`` asks; later
    ``run`` calls play nothing. ``info["agent"]["threshold"]`` is the threshold used.
    """

    Options: ClassVar[type] = GlobalOptions
    one_policy = True

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(envs, episodes=episodes, seed=seed, **options)
        self.threshold: float | None = None

    def solve(self) -> float:
        """The smallest threshold (to bisection precision) whose actions meet every budget."""
        envs = self.envs
        if envs.budget_fits(envs.threshold_actions(0.0)):
            return 0.0
        hi = 1.0
        while not envs.budget_fits(envs.threshold_actions(hi)) and hi < 2.0**40:
            if min(envs.threshold_actions(hi)) >= 1.0:
                break  # every unit at its largest sparsity: higher thresholds change nothing
            hi *= 2.0
        return smallest_fitting(lambda t: envs.budget_fits(envs.threshold_actions(t)), 0.0, hi,
                                self.options.bisection_steps)

    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True, on_round: OnRound | None = None) -> None:
        if episodes < 1 or self.episodes_done >= 1:
            return
        if self.threshold is None:
            self.threshold = self.solve()
        actions = self.envs.threshold_actions(self.threshold)
        self._play_rounds(1, lambda k: actions, on_episode,
                          lambda k: {"phase": "threshold", "threshold": self.threshold, "evaluations": 1}, on_round)

    def _state(self, path: Path) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        self.threshold = state["threshold"]
