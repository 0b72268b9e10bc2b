"""Baselines the RL agents must beat with the same environment and episode count.

- ``uniform``: one sparsity for every unit, meeting the budget exactly.
- ``random``: uniform random actions (random search; with adaptive BN a strong
  baseline, EagleEye, Li et al., ECCV 2020).
- ``sensitivity``: per-unit sensitivity analysis, then a greedy allocation of
  the budget to the least sensitive units per unit of cost (as in the
  sensitivity-analysis pruning of Li et al., ICLR 2017, and Distiller).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adc.agents.base import Agent, OnEpisode, OnRound, register_agent
from adc.envs.vec_env import PruningVecEnv


@register_agent("uniform")
class UniformAgent(Agent):
    """Plays the task's ``uniform_actions()``: the same sparsity for every unit.

    The environment is deterministic for a fixed policy, so a second episode
    would repeat the first: ``run`` plays one episode in all and then returns
    at once, whatever ``episodes`` asks (``on_episode`` is called once per search).
    """

    one_policy = True

    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True, on_round: OnRound | None = None) -> None:
        if episodes < 1 or self.episodes_done >= 1:
            return
        actions = self.envs.uniform_actions()
        self._play_rounds(1, lambda k: actions, on_episode, lambda k: {"phase": "uniform"}, on_round)


@register_agent("random")
class RandomAgent(Agent):
    """Random search: every action uniform in [0, 1] from a seeded generator; the environment clips.

    ``explore=False`` changes nothing: random search has no learned policy.
    """

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(envs, episodes=episodes, seed=seed, **options)
        self.rng = np.random.default_rng(self.seed)

    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True, on_round: OnRound | None = None) -> None:
        # One draw per unit, in order: the same policies whatever the number of workers.
        propose = lambda k: [float(self.rng.uniform(0.0, 1.0)) for _ in range(self.num_units)]  # noqa: E731
        self._play_rounds(episodes, propose, on_episode, lambda k: {"phase": "explore"}, on_round)

    def _state(self, path: Path) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        self.rng.bit_generator.state = state["rng"]


@dataclasses.dataclass(frozen=True)
class SensitivityOptions:
    """Settings of the sensitivity baseline.

    Attributes:
        grid: Actions probed on each unit alone (the others unpruned).
        step: Action increment of the greedy allocation.
    """

    grid: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    step: float = 0.02


@register_agent("sensitivity")
class SensitivityAgent(Agent):
    """Sensitivity analysis, then a greedy budget allocation, played once.

    1. Probe: ``evaluate_actions`` with one unit pruned at each action of
       ``grid`` and every other unit unpruned, plus the unpruned network (all
       probes in one batch, scored in parallel with workers); a unit's drop
       curve is the loss of reward, linear between probes.
    2. Allocate: starting from nothing pruned, repeatedly raise by ``step`` the
       action of the unit whose drop grows least per unit of cost saved
       (``unit_costs()``), until ``budget_fits``.
    3. Play that policy through the environment (which clips it) once.

    Each probe costs one evaluation, like an episode, so the probes count
    against the episode budget: ``1 + num_units * k + 1 <= episodes`` with ``k``
    the largest grid points kept (at least the largest one, so with fewer than
    ``num_units + 2`` episodes the budget is exceeded). ``on_episode`` is
    called once, for the played policy; its ``info["agent"]["evaluations"]``
    says how many evaluations were spent. Later ``run`` calls play nothing.
    """

    Options: ClassVar[type] = SensitivityOptions
    one_policy = True
    probes = True

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(envs, episodes=episodes, seed=seed, **options)
        self.allocation: list[float] | None = None
        self.evaluations = 0

    def probe_grid(self) -> list[float]:
        """The grid actions probed per unit, trimmed to fit the episode budget."""
        grid = sorted(float(a) for a in self.options.grid)
        fit = max(1, (self.episodes - 2) // self.num_units)
        return grid[-fit:]

    def allocate(self) -> list[float]:
        """Probe the units and allocate the budget; the result is cached."""
        if self.allocation is not None:
            return self.allocation
        envs = self.envs
        n = self.num_units
        grid = self.probe_grid()
        probes = [[0.0] * n]
        for unit in range(n):
            for action in grid:
                actions = [0.0] * n
                actions[unit] = action
                probes.append(actions)
        rewards = envs.evaluate_actions(probes)
        unpruned = rewards[0]
        drops = (unpruned - np.asarray(rewards[1:], dtype=np.float64)).reshape(n, len(grid))
        self.evaluations = len(probes)
        # Pruning more never helps in expectation: make each curve non-decreasing.
        drops = np.maximum.accumulate(np.maximum(drops, 0.0), axis=1)
        xs = np.concatenate([[0.0], grid])
        curves = [np.concatenate([[0.0], d]) for d in drops]
        costs = np.asarray(envs.unit_costs(), dtype=np.float64)
        actions = np.zeros(n)
        while not envs.budget_fits(actions.tolist()) and (actions < 1.0).any():
            raised = np.minimum(actions + self.options.step, 1.0)
            saved = costs * (raised - actions)
            loss = np.array([np.interp(raised[i], xs, curves[i]) - np.interp(actions[i], xs, curves[i]) for i in range(n)])
            ratio = np.where(saved > 0, loss / np.maximum(saved, 1e-12), np.inf)
            unit = int(np.argmin(ratio))
            actions[unit] = raised[unit]
        self.allocation = actions.tolist()
        return self.allocation

    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True, on_round: OnRound | None = None) -> None:
        if episodes < 1 or self.episodes_done >= 1:
            return
        allocation = self.allocate()
        self._play_rounds(1, lambda k: allocation, on_episode,
                          lambda k: {"phase": "allocation", "evaluations": self.evaluations + 1}, on_round)

    def _state(self, path: Path) -> dict[str, Any]:
        return {"allocation": self.allocation, "evaluations": self.evaluations}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        self.allocation = state["allocation"]
        self.evaluations = int(state["evaluations"])
