"""Refinement: a local search around the best policy so far, the last phase of a learning agent's search.

A learning agent's episodes concentrate where good policies are, but its
single best episode is often matched by random search with the same
budget (independent reproductions of AMC found the same); hill-climbing from the best policy with shrinking
Gaussian steps turns that concentration into a better final policy. The
environment clips every perturbed policy, so budgets still hold.
:class:`CMARefiner` does the same search with CMA-ES (``refine_method="cmaes"``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from adc.agents.base import OnEpisode, OnRound
from adc.agents.cmaes import Generations, cma_strategy
from adc.envs import contract
from adc.envs.vec_env import PruningVecEnv


class Refinement(ABC):
    """A refinement phase played ``num_envs`` episodes a round; subclasses propose the policies.

    Args:
        envs: The environments.
        episodes: Episodes of the whole phase.
    """

    def __init__(self, envs: PruningVecEnv, episodes: int) -> None:
        self.envs, self.episodes = envs, episodes
        self.done = 0

    @abstractmethod
    def _propose(self, most: int) -> list[tuple[np.ndarray, float]]:
        """At most ``most`` (at least one) proposals of the next round, each with its step size."""

    def _heard(self, proposal: np.ndarray, reward: float) -> None:
        """``proposal`` was played and earned ``reward``."""

    def run(self, episodes: int, on_episode: OnEpisode, on_round: OnRound | None = None) -> None:
        """Play ``episodes`` episodes; stop after a round in which ``on_episode`` or ``on_round`` returned False."""
        left = episodes
        while left > 0:
            round_ = self._propose(min(self.envs.num_envs, left))
            keep_going = True
            for (proposal, sigma), info in zip(round_, self.envs.play([p.tolist() for p, _ in round_])):
                self._heard(proposal, float(info[contract.REWARD]))
                info[contract.AGENT] = {"phase": "refine", "sigma": sigma}
                keep_going = on_episode(info) and keep_going
            self.done += len(round_)
            left -= len(round_)
            if on_round is not None:
                keep_going = on_round() and keep_going
            if not keep_going:
                return


class Refiner(Refinement):
    """Perturbs the best policy's actions and plays them, ``num_envs`` a round.

    Episode ``j`` of the phase (0-based) adds ``N(0, sigma_j)`` to every action
    of the best policy at the start of its round, with ``sigma_j`` shrinking
    geometrically from ``sigma[0]`` to ``sigma[1]`` over the phase.

    Args:
        envs: The environments.
        best: Returns the best history record so far (it changes as better ones come).
        episodes: Episodes of the whole phase.
        seed: Seed of the perturbations.
        done: Episodes of the phase already played (a resumed search): their draws are skipped.
        sigma: First and last standard deviation of the action perturbation.
    """

    def __init__(self, envs: PruningVecEnv, best: Callable[[], Mapping[str, Any]], *, episodes: int, seed: int,
                 done: int = 0, sigma: tuple[float, float] = (0.1, 0.02)) -> None:
        super().__init__(envs, episodes)
        self.best, self.sigma = best, sigma
        self.rng = np.random.default_rng(seed)
        for _ in range(done):  # the same draws as an uninterrupted phase
            self.rng.normal(0.0, 1.0, size=envs.num_units)
            self.done += 1

    def scale(self, j: int) -> float:
        """Sigma of the phase's ``j``-th episode."""
        first, last = self.sigma
        return first * (last / first) ** (j / max(1, self.episodes - 1))

    def _propose(self, most: int) -> list[tuple[np.ndarray, float]]:
        base = np.asarray(self.best()[contract.ACTIONS], dtype=np.float64)
        scales = [self.scale(self.done + k) for k in range(most)]
        return [(np.clip(base + self.rng.normal(0.0, scale, size=len(base)), 0.0, 1.0), float(scale))
                for scale in scales]


REFINE_METHODS = ("gaussian", "cmaes")
"""How the refinement phase searches around the best policy: :class:`Refiner` or :class:`CMARefiner`."""


class CMARefiner(Refinement):
    """CMA-ES started at the best policy of the phase's start, played ``num_envs`` a round.

    Where :class:`Refiner` hill-climbs on single noisy rewards (the best of its
    draws wins, so it follows the luckiest evaluation), CMA-ES moves its mean
    by a weighted average of the better half of each generation and adapts its
    step size and directions, so a lucky reward pulls it less (the same
    library as the ``cmaes`` agent, :mod:`adc.agents.cmaes`). Told the
    proposals, as that agent is. Resumable without pickle: the generator is
    seeded and ``told`` replays the phase's recorded rewards.

    Args:
        envs: The environments.
        centre: Actions of the best policy when the phase started.
        episodes: Episodes of the whole phase.
        seed: Seed of CMA-ES's normal draws.
        told: Rewards of the phase's episodes already played (a resumed search), in order.
        sigma0: Initial step size, in action units.
        popsize: Policies a generation, rounded up to a multiple of ``num_envs`` (None: ``cma``'s ``4 + 3 ln n``).

    The defaults (0.1, 6) closed the most of the synthetic environments' gap
    among (0.05, 0.1, 0.2) x (6, ``cma``'s): 0.687, level with the Gaussian
    refinement (``benchmarks/results/ddpg_ablation.md``).
    """

    def __init__(self, envs: PruningVecEnv, centre: Sequence[float], *, episodes: int, seed: int,
                 told: Sequence[float] = (), sigma0: float = 0.1, popsize: int | None = 6) -> None:
        super().__init__(envs, episodes)
        size = popsize or 4 + int(3 * math.log(envs.num_units))
        size = -(-size // envs.num_envs) * envs.num_envs
        self.generations = Generations(cma_strategy(centre, sigma0, size, np.random.default_rng(seed)))
        for reward in told:  # the same asks and tells as the uninterrupted phase
            self._heard(self.generations.ask(), float(reward))
            self.done += 1

    def _propose(self, most: int) -> list[tuple[np.ndarray, float]]:
        sigma = float(self.generations.es.sigma)
        return [(self.generations.ask(), sigma) for _ in range(min(most, self.generations.room()))]

    def _heard(self, proposal: np.ndarray, reward: float) -> None:
        self.generations.tell(proposal, reward)
