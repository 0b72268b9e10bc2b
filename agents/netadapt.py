"""``netadapt``: NetAdapt's greedy, resource-stepped simplification (Yang et al., ECCV 2018).

NetAdapt lowers the resource (measured latency, read from a lookup table) by a
step each iteration. In an iteration it proposes one network per layer --
that layer alone pruned just enough to meet the iteration's target, the rest
as they are -- fine-tunes each proposal briefly, and keeps the most accurate;
it stops when the budget is met. adc does the same on its policies, with two
changes: a proposal's accuracy is measured after batch-norm recalibration
instead of a short fine-tune (adaptive BN, EagleEye), and proposals are
always pruned from the original weights by the search's criterion.

The resource is the task's first budget (:meth:`~adc.envs.contract.PruningTask.resource`),
so ``--budget latency=...`` makes it latency-aware through the measured
table, as in the paper. Every proposal is an evaluation and counts against
the episode budget: ``iterations x units + 1 <= episodes``. The proposals of
one iteration are scored in one batch (in parallel with workers).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adc.agents.base import Agent, OnEpisode, OnRound, register_agent
from adc.utils.bisection import smallest_fitting
from adc.envs.vec_env import PruningVecEnv


@dataclasses.dataclass(frozen=True)
class NetAdaptOptions:
    """Settings of the NetAdapt strategy.

    Attributes:
        iterations: Resource steps from the unpruned model to the budget (0: as
            many as the episodes pay for, ``(episodes - 1) // units``, at least 1).
        search_steps: Bisection steps finding each proposal's action (cheap: no evaluation).
    """

    iterations: int = 0
    search_steps: int = 30


@register_agent("netadapt")
class NetAdaptAgent(Agent):
    """Greedy resource-stepped pruning, played once (see the module docs).

    Each iteration's target is an equal share of what is left of the first
    budget's excess (see :meth:`allocate`). A unit that cannot reach the
    target alone (it is pruned as far as allowed instead) is a proposal only
    when no unit can; then the one losing the least reward per resource
    removed is kept. Units already at their largest sparsity propose nothing.
    The played episode's ``info["agent"]`` holds ``evaluations`` (proposals
    scored, plus the episode), ``iterations`` and ``spread`` (whether the rest
    of the way was taken from every unit alike). Deterministic; later ``run``
    calls play nothing.
    """

    Options: ClassVar[type] = NetAdaptOptions
    one_policy = True
    probes = True

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(envs, episodes=episodes, seed=seed, **options)
        self.allocation: list[float] | None = None
        self.evaluations = 0
        self.iterations_done = 0
        self.spread = False

    def iterations(self) -> int:
        """Resource steps: the option, else as many as the episode budget pays for."""
        if self.options.iterations > 0:
            return int(self.options.iterations)
        return max(1, (self.episodes - 1) // self.num_units)

    def _reach(self, actions: np.ndarray, unit: int, target: float) -> tuple[float, bool]:
        """The smallest action of ``unit`` (others fixed) whose resource is at most ``target``; whether it got there."""
        trial = actions.copy()
        trial[unit] = 1.0
        if self.envs.resource(trial.tolist()) > target:
            return 1.0, False

        def fits(action: float) -> bool:
            trial[unit] = action
            return self.envs.resource(trial.tolist()) <= target

        return smallest_fitting(fits, float(actions[unit]), 1.0, self.options.search_steps), True

    def allocate(self) -> list[float]:
        """Run the iterations (each scores its proposals in one batch); the result is cached.

        Each iteration's target re-plans the rest of the way in equal steps:
        ``resource - (resource - 1) / iterations_left``, so a step that fell
        short is made up by the next ones rather than carried to the end.
        When the iterations (or the evaluations) run out before the budget is
        met, :meth:`_spread` takes what is left from every unit alike; leaving
        it to the budget clipping would take it all from the last units.
        """
        if self.allocation is not None:
            return self.allocation
        envs = self.envs
        current = np.zeros(self.num_units)
        reward: float | None = None  # of ``current``; the unpruned model's is not spent an evaluation on
        total = self.iterations()
        allowed = max(self.episodes - 1, 0)  # the played episode is one evaluation too
        for k in range(1, total + 1):
            resource = envs.resource(current.tolist())
            units = np.flatnonzero(current < 1.0)
            if resource <= 1.0 or len(units) == 0 or self.evaluations + len(units) > allowed:
                break  # the first budget is met (the spread below meets any other), or nothing is left to try
            target = resource - (resource - 1.0) / (total - k + 1)
            proposals: list[np.ndarray] = []
            reached: list[bool] = []
            for unit in units:
                action, ok = self._reach(current, int(unit), target)
                proposal = current.copy()
                proposal[unit] = action
                proposals.append(proposal)
                reached.append(ok)
            if any(reached):
                proposals = [p for p, ok in zip(proposals, reached) if ok]
            rewards = envs.evaluate_actions([p.tolist() for p in proposals])
            self.evaluations += len(proposals)
            best = int(np.argmax(rewards))
            if not any(reached) and reward is not None:
                # unequal reductions (NetAdapt compares equal ones): the least reward lost per resource removed
                removed = [max(resource - envs.resource(p.tolist()), 1e-12) for p in proposals]
                best = int(np.argmax([(r - reward) / g for r, g in zip(rewards, removed)]))
            current, reward = proposals[best], float(rewards[best])
            self.iterations_done = k
        if not envs.budget_fits(current.tolist()):
            current = self._spread(current)
            self.spread = True
        self.allocation = current.tolist()
        return self.allocation

    def _spread(self, actions: np.ndarray) -> np.ndarray:
        """The smallest common move of every unit toward its largest sparsity, ``a + t (1 - a)``, that meets the budget."""
        t = smallest_fitting(lambda t: self.envs.budget_fits((actions + t * (1.0 - actions)).tolist()), 0.0, 1.0,
                             self.options.search_steps)
        return actions + t * (1.0 - actions)

    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True, on_round: OnRound | None = None) -> None:
        if episodes < 1 or self.episodes_done >= 1:
            return
        allocation = self.allocate()
        label = {"phase": "netadapt", "evaluations": self.evaluations + 1, "iterations": self.iterations_done,
                 "spread": self.spread}
        self._play_rounds(1, lambda k: allocation, on_episode, lambda k: dict(label), on_round)

    def _state(self, path: Path) -> dict[str, Any]:
        return {"allocation": self.allocation, "evaluations": self.evaluations, "iterations_done": self.iterations_done,
                "spread": self.spread}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        self.allocation = state["allocation"]
        self.evaluations = int(state["evaluations"])
        self.iterations_done = int(state["iterations_done"])
        self.spread = bool(state.get("spread", False))
