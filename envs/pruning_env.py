"""The AMC pruning environment: one step per prunable unit, one episode per policy."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from adc.analysis.cost import cost_of_kept
from adc.envs import contract
from adc.envs.task import ModelTask, Scored

OBSERVATION_FEATURES = (
    "index", "kind", "in_channels", "out_channels", "stride", "kernel", "feature_map",
    "cost", "reduced_so_far", "cost_to_come", "previous_action",
)
BOUND_FEATURES = ("lowest_action", "highest_action")
"""Appended to the observation with ``observe_bounds``: the interval the budget clipping allows at this unit."""


class PruningEnv(gym.Env):
    """Choose, unit by unit, how much of a trained network to prune (AMC, He et al., ECCV 2018).

    ## Description

    The network's prunable units (groups of channels that must be removed
    together, from :func:`adc.analysis.graph.analyze`) are visited in execution order.
    At each step the agent picks the sparsity of one unit. After the last unit
    the network is really pruned with the chosen channel criterion (and
    least-squares reconstruction if asked), its batch-norm statistics are
    re-estimated on fixed training images (adaptive BN, EagleEye, Li et al.,
    ECCV 2020), it is evaluated on the validation split, and the reward is
    computed from the metrics.

    Every budget (FLOPs, MACs, params, ...) is met by construction: before it
    is applied, each action is clipped so that the budget can still be met if
    every later unit is pruned as hard as allowed. With ``fill_budget`` (the
    default) the action is also raised when, even keeping every later unit
    whole, the policy would end under budget: the reference AMC only caps, and
    its episodes end at 0.47-0.49 of a 0.5 budget, giving accuracy away.

    ## Action Space

    ``Box(0, 1, (1,), float32)``: the fraction of the allowed sparsity range,
    ``sparsity = min_sparsity + a * (max_sparsity - min_sparsity)``, with
    ``max_sparsity = 1 - min_keep``. The kept channel count is rounded to
    ``round_to`` (never zero). ``info["applied_action"]`` is the action that
    corresponds to the sparsity actually applied after clipping and rounding;
    agents store it, not the proposed one.

    ## Observation Space

    ``Box(0, 1, (11,), float32)``: AMC's layer embedding of the current unit.
    Static features are min-max normalised over the units; dynamic ones are
    fractions of the unpruned cost of the first budget's metric.

    | Num | Observation       | Meaning                                                        |
    |-----|-------------------|----------------------------------------------------------------|
    | 0   | index             | position of the unit in execution order                        |
    | 1   | kind              | conv / depthwise / grouped / linear                            |
    | 2   | in_channels       | input channels of the unit's root layer                        |
    | 3   | out_channels      | channels of the unit                                           |
    | 4   | stride            | stride of the root layer                                       |
    | 5   | kernel            | kernel size of the root layer                                  |
    | 6   | feature_map       | input feature-map height of the root layer                     |
    | 7   | cost              | MACs (params for a params budget) that depend on the unit      |
    | 8   | reduced_so_far    | fraction of that cost removed by the units already decided     |
    | 9   | cost_to_come      | fraction of the cost in the units still to decide              |
    | 10  | previous_action   | the action applied at the previous step                        |
    | 11  | lowest_action     | with ``observe_bounds``: lowest action the clipping allows now |
    | 12  | highest_action    | with ``observe_bounds``: highest action it allows now          |

    Without ``observe_bounds`` (the default) the agent is not told the
    interval the clipping will force its action into; the budget state reaches
    it only through ``reduced_so_far`` and ``cost_to_come``.

    ## Rewards

    0 on every step but the last. At the last step, the reward function (a
    name in :data:`adc.rewards.REWARDS`, a plugin, or a callable) of the metrics
    record (:mod:`adc.objective.metrics`): the evaluation's accuracy metrics
    and every cost with its fraction of the original. A reward that fails or is
    not a finite number stops the episode with an :class:`~adc.utils.errors.AdcError`
    (a NaN never reaches an agent). AMC's credit assignment (final reward minus
    a baseline, given to every transition) is the agents' job.

    ## Starting State

    The first unit, nothing pruned yet. The environment itself is deterministic:
    ``reset(seed=...)`` only seeds ``self.np_random`` for API compatibility.

    ## Episode End

    ``terminated=True`` after the last unit; ``info`` then holds ``policy``
    (unit name -> sparsity), ``kept`` (channels per unit), ``metrics`` (the
    record), ``reward``, ``actions`` (the applied action of every unit),
    ``budget_use`` (cost / limit per budget, at most 1) and ``timing`` (seconds
    spent pruning and evaluating); the keys are the constants of
    :mod:`adc.envs.contract`. Episodes are never truncated.

    ## Arguments

    - ``task``: a :class:`~adc.envs.task.ModelTask` (built once by
      :meth:`ModelTask.build <adc.envs.task.ModelTask.build>`: the model's
      graph, policy space, budgets, reward and evaluator). The environment
      itself only holds the episode's state, so it is cheap to make and many
      can share one task (:class:`~adc.envs.vec_env.PruningVecEnv`).
    - ``observe_bounds``: add the clipping's interval at the current unit to
      the observation (:data:`BOUND_FEATURES`).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, task: ModelTask, *, observe_bounds: bool = False) -> None:
        super().__init__()
        self.task = task
        self.num_units = task.num_units
        self.observe_bounds = observe_bounds
        features = len(OBSERVATION_FEATURES) + (len(BOUND_FEATURES) if observe_bounds else 0)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (features,), np.float32)
        self._reset_state()

    def _reset_state(self) -> None:
        self._i = 0
        self._kept = self.task.space.graph.channels.copy()
        self._prev_action = 0.0
        self._actions: list[float] = []

    def _observation(self) -> np.ndarray:
        task = self.task
        graph = task.space.graph
        i = min(self._i, self.num_units - 1)
        partial = self._kept.copy()
        partial[i:] = graph.channels[i:]
        reduced = 1.0 - task.primary_of(cost_of_kept(graph, partial)) / max(task.primary_total, 1.0)
        dynamic = [np.clip(reduced, 0.0, 1.0), task.cost_to_come[i], self._prev_action]
        if self.observe_bounds:
            dynamic += list(task.action_bounds(i, self._kept)) if self._i < self.num_units else [0.0, 0.0]
        return np.clip(np.concatenate([task.static_features[i], dynamic]), 0.0, 1.0).astype(np.float32)

    # -- gymnasium API -------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._reset_state()
        return self._observation(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, info, done = self.advance(action)
        if not done:
            return obs, 0.0, False, False, info
        (scored,) = self.task.score_many([self._kept.copy()])
        info.update(self.conclude(scored))
        return obs, float(info[contract.REWARD]), True, False, info

    # -- the two halves of a step, for vectorised environments that score episodes together ---------

    def advance(self, action: Any) -> tuple[np.ndarray, dict[str, Any], bool]:
        """Clip and apply the action of the current unit: ``(observation, info, episode finished)``."""
        if self._i >= self.num_units:
            raise RuntimeError("episode is over: call reset() first")
        unit = self.task.units[self._i]
        kept, applied = self.task.decide(self._i, self._kept, action)
        self._kept[self._i] = kept
        self._actions.append(applied)
        self._prev_action = applied
        self._i += 1
        info = {contract.APPLIED_ACTION: applied, contract.UNIT: unit.name, contract.KEPT_CHANNELS: int(kept)}
        return self._observation(), info, self._i >= self.num_units

    @property
    def kept(self) -> np.ndarray:
        """Kept channels per unit of the current episode (final once it has finished)."""
        return self._kept.copy()

    def conclude(self, scored: Scored) -> dict[str, Any]:
        """The final info of the finished episode, given its score."""
        task = self.task
        units = task.units
        return {
            contract.REWARD: scored.reward,
            contract.METRICS: scored.record,
            contract.POLICY: {u.name: float(1.0 - k / u.channels) for u, k in zip(units, self._kept)},
            contract.KEPT: {u.name: int(k) for u, k in zip(units, self._kept)},
            contract.ACTIONS: list(self._actions),
            contract.BUDGET_USE: task.budget_use(self._kept),
            contract.TIMING: {"prune": scored.evaluation.prune_seconds, "evaluate": scored.evaluation.evaluate_seconds},
            contract.WORKER: scored.evaluation.worker,
        }
