"""Refinement: a local search around the best policy so far, the last phase of a learning agent's search.

A learning agent's episodes concentrate where good policies are, but its
single best episode is often matched by random search with the same
budget (independent reproductions of AMC found the same); hill-climbing from the best policy with shrinking
Gaussian steps turns that concentration into a better final policy. The
environment clips every perturbed policy, so budgets still hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from adc.agents.base import OnEpisode, OnRound
from adc.envs import contract
from adc.envs.vec_env import PruningVecEnv


class Refiner:
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
        self.envs, self.best, self.episodes, self.sigma = envs, best, episodes, sigma
        self.rng = np.random.default_rng(seed)
        self.done = 0
        for _ in range(done):  # the same draws as an uninterrupted phase
            self.rng.normal(0.0, 1.0, size=envs.num_units)
            self.done += 1

    def scale(self, j: int) -> float:
        """Sigma of the phase's ``j``-th episode."""
        first, last = self.sigma
        return first * (last / first) ** (j / max(1, self.episodes - 1))

    def run(self, episodes: int, on_episode: OnEpisode, on_round: OnRound | None = None) -> None:
        """Play ``episodes`` perturbed episodes; stop after a round in which ``on_episode`` or ``on_round`` returned False."""
        left = episodes
        while left > 0:
            size = min(self.envs.num_envs, left)
            base = np.asarray(self.best()[contract.ACTIONS], dtype=np.float64)
            js = [self.done + k for k in range(size)]
            proposals = [np.clip(base + self.rng.normal(0.0, self.scale(j), size=len(base)), 0.0, 1.0) for j in js]
            keep_going = True
            for j, info in zip(js, self.envs.play([p.tolist() for p in proposals])):
                info[contract.AGENT] = {"phase": "refine", "sigma": float(self.scale(j))}
                keep_going = on_episode(info) and keep_going
            self.done += size
            left -= size
            if on_round is not None:
                keep_going = on_round() and keep_going
            if not keep_going:
                return
