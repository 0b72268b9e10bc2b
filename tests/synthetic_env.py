"""A fast synthetic pruning environment that obeys the contract of :mod:`adc.envs.contract`.

Used by the agent tests (and reusable by any test that needs an environment
without a network): microseconds per step, known optimum. It is its own
:class:`~adc.envs.contract.PruningTask` (``env.task is env``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MAX_SPARSITY = 0.8


class SyntheticPruningEnv(gym.Env):
    """Pruning a made-up network whose layer sensitivities are known.

    ## Description

    Each of ``num_units`` units has a cost share ``c_i`` (summing to 1) and a
    sensitivity ``k_i``. The action of a unit is the fraction of the allowed
    sparsity range: sparsity ``s_i = action * 0.8``. The cost of a policy is
    ``sum_i c_i * (1 - s_i)``; the reward is ``1 - sum_i k_i * s_i**2``.
    Under the budget the best policy prunes cheap-to-lose units (small
    ``k_i / c_i``) hardest, while the uniform policy prunes all alike.

    ## Action Space

    ``Box(0, 1, (1,), float32)``. The action is clipped, as in ``PruningEnv``:
    from below so that the budget stays reachable if every later unit is
    pruned as hard as allowed, and from above so that the budget is used if
    every later unit is not pruned at all. The last unit therefore meets the
    budget exactly. ``info["applied_action"]`` reports the clipped action.

    ## Observation Space

    ``Box(0, 1, (11,), float32)``:

    | Num | Observation                                   |
    |-----|-----------------------------------------------|
    | 0   | unit index / (num_units - 1)                  |
    | 1   | cost share of this unit                       |
    | 2   | cost removed so far                           |
    | 3   | cost share of the units still to come         |
    | 4   | previous applied action                       |
    | 5   | smallest allowed action                       |
    | 6   | largest allowed action                        |
    | 7   | budget                                        |
    | 8-10| a fixed per-unit descriptor (like channel counts) |

    ## Rewards

    0 on every step but the last; the last step returns the policy's reward,
    also in ``info["reward"]``.

    ## Starting State

    Unit 0, nothing pruned. The environment is deterministic.

    ## Episode End

    ``terminated=True`` after ``num_units`` steps; never truncated.

    ## Arguments

    - ``num_units``: number of prunable units.
    - ``budget``: kept fraction of the cost, in ``(1 - MAX_SPARSITY, 1]``.
    - ``sensitivities``: ``k_i`` per unit; default spread over two decades.
    - ``costs``: cost shares (normalised to sum 1); default equal.
    - ``seed``: seeds the per-unit descriptors.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        num_units: int = 8,
        budget: float = 0.5,
        sensitivities: Sequence[float] | None = None,
        costs: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        if not 1 - MAX_SPARSITY < budget <= 1:
            raise ValueError(f"budget {budget} unreachable; use a value in ({1 - MAX_SPARSITY:.1f}, 1]")
        self.num_units = num_units
        self.budget = float(budget)
        if sensitivities is None:
            sensitivities = np.geomspace(0.02, 2.0, num_units)[np.random.default_rng(seed).permutation(num_units)]
        self.sensitivities = np.asarray(sensitivities, dtype=np.float64)
        c = np.ones(num_units) if costs is None else np.asarray(costs, dtype=np.float64)
        self.costs = c / c.sum()
        if len(self.sensitivities) != num_units or len(self.costs) != num_units:
            raise ValueError("sensitivities and costs need one value per unit")
        self._descriptor = np.random.default_rng(seed).uniform(0, 1, (num_units, 3))
        ratio = np.log(self.sensitivities / self.costs)
        span = max(float(ratio.max() - ratio.min()), 1e-12)
        self.spreads = 0.2 + 0.7 * (ratio.max() - ratio) / span  # threshold_actions' channel-score spread per unit
        self.action_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, (11,), np.float32)
        self.evaluations = 0
        self._unit = 0
        self._actions: list[float] = []

    # -- the PruningTask questions -----------------------------------------------------

    @property
    def task(self) -> SyntheticPruningEnv:
        return self

    def unit_costs(self) -> list[float]:
        return self.costs.tolist()

    def uniform_actions(self) -> list[float]:
        action = (1 - self.budget) / MAX_SPARSITY
        return [action] * self.num_units

    def budget_fits(self, actions: Sequence[float]) -> bool:
        return self._cost(actions) <= self.budget + 1e-9

    def resource(self, actions: Sequence[float]) -> float:
        return self._cost(actions) / self.budget

    def threshold_actions(self, threshold: float) -> list[float]:
        """Made-up channel scores: unit ``i``'s are spread evenly over ``[1 - w_i, 1 + w_i]`` (mean 1),
        wider for units that are cheap to lose per unit of cost, so a global threshold prunes them first."""
        pruned = np.clip((threshold - (1 - self.spreads)) / (2 * self.spreads), 0.0, 1.0) if threshold > 0 else 0 * self.spreads
        return np.clip(pruned / MAX_SPARSITY, 0.0, 1.0).tolist()

    def evaluate_actions(self, batch: Sequence[Sequence[float]]) -> list[float]:
        return [self.reward_of(actions) for actions in batch]

    def reward_of(self, actions: Sequence[float]) -> float:
        self.evaluations += 1
        s = np.clip(np.asarray(actions, dtype=np.float64), 0, 1) * MAX_SPARSITY
        return float(1 - np.sum(self.sensitivities * s**2))

    def optimum(self) -> float:
        """The best reward under the budget (water-filling on the Lagrangian)."""
        removed = 1 - self.budget
        lo, hi = 0.0, 1e6
        for _ in range(200):
            lam = (lo + hi) / 2
            s = np.clip(lam * self.costs / (2 * self.sensitivities), 0, MAX_SPARSITY)
            lo, hi = (lam, hi) if np.dot(self.costs, s) < removed else (lo, lam)
        return float(1 - np.sum(self.sensitivities * s**2))

    # -- gymnasium API -----------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._unit = 0
        self._actions = []
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        lo, hi = self._bounds()
        proposed = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        applied = float(np.clip(proposed, lo, hi))
        self._actions.append(applied)
        self._unit += 1
        info: dict[str, Any] = {"applied_action": applied, "proposed_action": proposed}
        if self._unit < self.num_units:
            return self._obs(), 0.0, False, False, info
        reward = self.reward_of(self._actions)
        info.update(
            reward=reward,
            actions=list(self._actions),
            cost=self._cost(self._actions),
            budget=self.budget,
        )
        return self._obs(), reward, True, False, info

    # -- internals ---------------------------------------------------------------------

    def _cost(self, actions: Sequence[float]) -> float:
        s = np.clip(np.asarray(actions, dtype=np.float64), 0, 1) * MAX_SPARSITY
        return float(np.dot(self.costs, 1 - s))

    def _bounds(self) -> tuple[float, float]:
        i = self._unit
        spent = float(np.dot(self.costs[:i], 1 - np.asarray(self._actions[:i]) * MAX_SPARSITY)) if i else 0.0
        rest = float(self.costs[i + 1 :].sum())
        c = self.costs[i]
        # keep at most what leaves the budget reachable with later units pruned hardest,
        # keep at least what uses the budget with later units not pruned.
        keep_max = (self.budget - spent - rest * (1 - MAX_SPARSITY)) / c
        keep_min = (self.budget - spent - rest) / c
        lo = (1 - min(keep_max, 1.0)) / MAX_SPARSITY
        hi = (1 - max(keep_min, 1 - MAX_SPARSITY)) / MAX_SPARSITY
        lo = float(np.clip(lo, 0, 1))
        return lo, float(np.clip(hi, lo, 1))

    def _obs(self) -> np.ndarray:
        i = self._unit
        lo, hi = self._bounds() if i < self.num_units else (0.0, 0.0)
        removed = float(np.dot(self.costs[:i], np.asarray(self._actions[:i]) * MAX_SPARSITY)) if i else 0.0
        obs = [
            i / max(1, self.num_units - 1),
            self.costs[i] if i < self.num_units else 0.0,
            removed,
            self.costs[i + 1 :].sum(),
            self._actions[-1] if self._actions else 0.0,
            lo,
            hi,
            self.budget,
            *(self._descriptor[i] if i < self.num_units else np.zeros(3)),
        ]
        return np.clip(np.asarray(obs, dtype=np.float32), 0, 1)
