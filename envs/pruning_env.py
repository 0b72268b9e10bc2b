"""The AMC pruning environment: one step per prunable unit, one episode per policy."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from adc.budgets import Budget, BudgetSpec, Price, resolve_budgets
from adc.cost import cost_of_kept
from adc.errors import AdcError
from adc.graph import Unit
from adc.pruning import ChannelPruner
from adc.rewards import Reward, check_reward, get_reward
from adc.training import recalibrate_bn

Evaluate = Callable[[nn.Module], Mapping[str, float]]

KIND_CODES = {"conv": 0.0, "depthwise": 1.0, "grouped": 2.0, "linear": 3.0}
OBSERVATION_FEATURES = (
    "index", "kind", "in_channels", "out_channels", "stride", "kernel", "feature_map",
    "cost", "reduced_so_far", "cost_to_come", "previous_action",
)


class PruningEnv(gym.Env):
    """Choose, unit by unit, how much of a trained network to prune (AMC, He et al., ECCV 2018).

    ## Description

    The network's prunable units (groups of channels that must be removed
    together, from :func:`adc.graph.analyze`) are visited in execution order.
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

    ## Rewards

    0 on every step but the last. At the last step, the reward function (a
    name in :data:`adc.rewards.REWARDS`, a plugin, or a callable) of the metrics
    record: top-1/top-5 accuracy, loss, and every cost with its fraction of the
    original. AMC's credit assignment (final reward minus a baseline, given to
    every transition) is the agents' job.

    ## Starting State

    The first unit, nothing pruned yet. The environment itself is deterministic:
    ``reset(seed=...)`` only seeds ``self.np_random`` for API compatibility.

    ## Episode End

    ``terminated=True`` after the last unit; ``info`` then holds ``policy``
    (unit name -> sparsity), ``kept`` (channels per unit), ``metrics`` (the
    record), ``reward`` / ``episode_reward``, ``budget_use`` (cost / limit per
    budget, at most 1) and ``timing`` (seconds spent pruning and evaluating).
    Episodes are never truncated.

    ## Arguments

    - ``model``: the trained network (never modified); ``example_input``: one input batch.
    - ``evaluate``: ``evaluate(model) -> {"top1", "top5", "loss", ...}`` on the validation split.
    - ``budgets``: ``["flops=0.5"]``, parsed specs, or resolved :class:`~adc.budgets.Budget` objects.
    - ``reward``: registry name, ``module:fn`` / ``file.py:fn``, or a callable (default ``"acc"``).
    - ``criterion``: channel criterion (default ``"l1"``); ``round_to``: kept-count multiple.
    - ``min_keep`` / ``max_keep``: bounds of each unit's kept fraction (default 0.2 / 1.0).
    - ``bn_images``: images for batch-norm recalibration (None or empty: off).
    - ``calibration``: training batches for data-driven criteria and reconstruction.
    - ``reconstruct``: refit pruned layers by least squares; ``fill_budget``: see above.
    - ``pruner``: a prebuilt :class:`~adc.pruning.ChannelPruner` (shares the trace and ranking).
    - ``latency_table``: a measured :class:`~adc.latency.LatencyTable` (needed by a latency
      budget); with it every record carries ``latency`` (seconds, predicted).
    - ``energy_model``: :class:`~adc.energy.EnergyModel` or TOML path (default: Horowitz 45 nm);
      every record carries ``energy`` (joules per sample, modelled).
    - ``extra_metrics``: more ``name -> price(kept)`` functions recorded in every record.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        *,
        evaluate: Evaluate,
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
        latency_table: Any = None,
        energy_model: Any = None,
        extra_metrics: Mapping[str, Price] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < min_keep <= max_keep <= 1.0:
            raise AdcError(f"min_keep={min_keep}, max_keep={max_keep}: need 0 < min_keep <= max_keep <= 1")
        self.pruner = pruner or ChannelPruner(model, example_input, criterion=criterion, round_to=round_to,
                                              calibration=calibration, reconstruct=reconstruct, seed=seed)
        self.graph = self.pruner.graph
        self.units: list[Unit] = self.graph.units
        if not self.units:
            raise AdcError("the model has no prunable unit (only its classifier and input layers?)")
        self.num_units = len(self.units)
        self.round_to = self.pruner.round_to
        self.min_sparsity = 1.0 - max_keep
        self.max_sparsity = 1.0 - min_keep
        self.fill_budget = fill_budget
        self.evaluate_fn = evaluate
        self.bn_images = bn_images if bn_images is not None and len(bn_images) > 0 else None
        self.reward_fn = get_reward(reward)
        self._min_kept = np.array([u.kept(self.max_sparsity, self.round_to) for u in self.units], dtype=np.float64)
        self._max_kept = np.array([u.kept(self.min_sparsity, self.round_to) for u in self.units], dtype=np.float64)
        self._candidates = [self._kept_choices(u, lo, hi) for u, lo, hi in zip(self.units, self._min_kept, self._max_kept)]
        budgets = list(budgets)
        specs = [b for b in budgets if not isinstance(b, Budget)]
        self.budgets = [b for b in budgets if isinstance(b, Budget)]
        if specs or not self.budgets:
            self.budgets += resolve_budgets(specs, self.graph, self._min_kept,
                                            latency_table=latency_table, energy_model=energy_model)
        self._check_budgets_reachable()

        primary = self.budgets[0].key
        unit_cost = np.array([u.params if primary == "params" else u.macs for u in self.units], dtype=np.float64)
        full_costs = self._full_costs = cost_of_kept(self.graph, self.graph.channels)
        self._primary_total = float(full_costs.params if primary == "params" else full_costs.macs)
        self._primary_of = (lambda c: float(c.params)) if primary == "params" else (lambda c: float(c.macs))
        self._unit_share = unit_cost / max(self._primary_total, 1.0)
        self._cost_to_come = np.array([min(1.0, self._unit_share[i + 1:].sum()) for i in range(self.num_units)])
        static = np.array(
            [[u.index, KIND_CODES.get(u.kind, 0.0), u.in_channels, u.channels, u.stride, u.kernel, u.height, c]
             for u, c in zip(self.units, unit_cost)], dtype=np.float64)
        span = static.max(0) - static.min(0)
        self._static = np.where(span > 0, (static - static.min(0)) / np.where(span > 0, span, 1.0), 0.0)

        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(OBSERVATION_FEATURES),), np.float32)
        self.extra_metrics = self._extra_metrics(latency_table, energy_model, extra_metrics)
        self.original_record = self._record(self.graph.channels, self._evaluate(self.pruner.model, recalibrate=False))
        check_reward(self.reward_fn, self.original_record, label=f"reward {reward!r}" if isinstance(reward, str) else "reward")
        self._seed = seed
        self._reset_state()

    # -- helpers -------------------------------------------------------------------------

    def _kept_choices(self, unit: Unit, lo: float, hi: float) -> np.ndarray:
        counts = {unit.kept(1.0 - c / unit.channels, self.round_to) for c in range(1, unit.channels + 1)}
        return np.array(sorted(c for c in counts if lo <= c <= hi), dtype=np.float64)

    def _check_budgets_reachable(self) -> None:
        for b in self.budgets:
            if b.price(self._min_kept) > b.limit * (1 + 1e-9):
                raise AdcError(f"budget {b.key}={b.fraction:.3f} is unreachable with min_keep; smallest reachable "
                               f"{b.key}={b.price(self._min_kept) / b.original:.3f}")

    def _fits(self, kept: np.ndarray) -> bool:
        return all(b.price(kept) <= b.limit * (1 + 1e-9) for b in self.budgets)

    def _fullest_use(self, kept: np.ndarray) -> float:
        return max(b.price(kept) / b.limit for b in self.budgets)

    def _clip(self, i: int, wanted: float) -> float:
        """Clip unit ``i``'s kept count so every budget stays reachable (and, optionally, gets used)."""
        choices = self._candidates[i]
        trial = self._kept.copy()
        trial[i + 1:] = self._min_kept[i + 1:]
        # Largest choice that still fits with every later unit at its minimum (binary search: cost is monotone).
        lo, hi = 0, len(choices) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            trial[i] = choices[mid]
            if self._fits(trial):
                lo = mid
            else:
                hi = mid - 1
        cap = choices[lo]
        floor = choices[0]
        if self.fill_budget:
            # Smallest choice that can still reach the budget with every later unit kept whole.
            trial[i + 1:] = self._max_kept[i + 1:]
            lo, hi = 0, len(choices) - 1
            while lo < hi:
                mid = (lo + hi) // 2
                trial[i] = choices[mid]
                if self._fullest_use(trial) >= 1.0 - 1e-9:
                    hi = mid
                else:
                    lo = mid + 1
            floor = choices[lo]
        return float(min(max(wanted, floor), cap))

    def _action_of(self, sparsity: float) -> float:
        span = self.max_sparsity - self.min_sparsity
        return float(np.clip((sparsity - self.min_sparsity) / span, 0.0, 1.0)) if span > 0 else 0.0

    def _sparsity_of(self, action: float) -> float:
        return self.min_sparsity + float(np.clip(action, 0.0, 1.0)) * (self.max_sparsity - self.min_sparsity)

    def _observation(self) -> np.ndarray:
        i = min(self._i, self.num_units - 1)
        partial = self._kept.copy()
        partial[i:] = self.graph.channels[i:]
        reduced = 1.0 - self._primary_of(cost_of_kept(self.graph, partial)) / max(self._primary_total, 1.0)
        dynamic = [np.clip(reduced, 0.0, 1.0), self._cost_to_come[i], self._prev_action]
        return np.clip(np.concatenate([self._static[i], dynamic]), 0.0, 1.0).astype(np.float32)

    def _evaluate(self, model: nn.Module, recalibrate: bool = True) -> dict[str, float]:
        if recalibrate and self.bn_images is not None:
            recalibrate_bn(model, self.bn_images)
        metrics = dict(self.evaluate_fn(model))
        if "top1" not in metrics:
            raise AdcError(f"evaluate() must return a dict with at least 'top1'; it returned keys {sorted(metrics)}")
        return metrics

    def _record(self, kept: np.ndarray, metrics: Mapping[str, float]) -> dict[str, float]:
        """The metrics record a reward sees: accuracy, loss and every cost with its ratio."""
        costs = cost_of_kept(self.graph, kept)
        full = self._full_costs
        record = {"top1": float(metrics["top1"]), "top5": float(metrics.get("top5", metrics["top1"])),
                  "loss": float(metrics.get("loss", math.nan))}
        record.update({k: float(v) for k, v in metrics.items() if k not in record and isinstance(v, (int, float))})
        values = {"macs": (costs.macs, full.macs), "flops": (costs.flops, full.flops), "params": (costs.params, full.params)}
        for b in self.budgets:
            values.setdefault(b.key, (b.price(kept), b.original))
        for key, (price, original) in self.extra_metrics.items():
            values.setdefault(key, (price(kept), original))
        for key, (value, original) in values.items():
            record[key] = float(value)
            record[f"original_{key}"] = float(original)
            record[f"{key}_ratio"] = float(value) / max(float(original), 1e-12)
        return record

    def _extra_metrics(self, latency_table: Any, energy_model: Any,
                       extra: Mapping[str, Price] | None) -> dict[str, tuple[Price, float]]:
        """Metrics recorded besides the budgets: energy always (analytic), latency with a table."""
        from adc.budgets import BUDGET_METRICS

        prices: dict[str, Price] = {"energy": BUDGET_METRICS.get("energy")(self.graph, energy_model=energy_model)}
        if latency_table is not None:
            prices["latency"] = BUDGET_METRICS.get("latency")(self.graph, latency_table=latency_table)
        prices.update(extra or {})
        return {k: (p, float(p(self.graph.channels))) for k, p in prices.items()}

    def _reset_state(self) -> None:
        self._i = 0
        self._kept = self.graph.channels.copy()
        self._prev_action = 0.0
        self._actions: list[float] = []

    # -- gymnasium API -------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._reset_state()
        return self._observation(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._i >= self.num_units:
            raise RuntimeError("episode is over: call reset() first")
        unit = self.units[self._i]
        kept, applied = self._decide(action)
        info: dict[str, Any] = {"applied_action": applied, "unit": unit.name, "kept_channels": int(kept)}
        if self._i < self.num_units:
            return self._observation(), 0.0, False, False, info
        info.update(self._finish())
        return self._observation(), float(info["reward"]), True, False, info

    def _decide(self, action: Any) -> tuple[float, float]:
        """Clip and apply the action for the current unit; advance. Returns (kept channels, applied action)."""
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        unit = self.units[self._i]
        wanted = unit.kept(self._sparsity_of(a if math.isfinite(a) else 0.0), self.round_to)
        kept = self._clip(self._i, float(np.clip(wanted, self._min_kept[self._i], self._max_kept[self._i])))
        self._kept[self._i] = kept
        applied = self._action_of(1.0 - kept / unit.channels)
        self._actions.append(applied)
        self._prev_action = applied
        self._i += 1
        return kept, applied

    def play_actions(self, actions: Sequence[float]) -> tuple[np.ndarray, list[float]]:
        """Play one episode's actions through the clipping only: no pruning, no evaluation.

        Starts a fresh episode (like :meth:`reset`) and applies each action
        exactly as :meth:`step` would, so the result is the policy that a full
        episode with these actions would prune to. Cheap (analytic costs only):
        meant for tests and for strategies that explore the clipped policy space.

        Args:
            actions: One action in [0, 1] per unit (``num_units`` of them).

        Returns:
            ``(kept, applied)``: channels kept per unit (float array in unit
            order) and the applied action of each step (``info["applied_action"]``).
            The environment is left at the end of the episode; call :meth:`reset` before stepping.
        """
        if len(actions) != self.num_units:
            raise AdcError(f"play_actions needs {self.num_units} actions (one per unit), got {len(actions)}")
        self._reset_state()
        applied = [self._decide(a)[1] for a in actions]
        return self._kept.copy(), applied

    def _finish(self) -> dict[str, Any]:
        policy = {u.name: float(1.0 - k / u.channels) for u, k in zip(self.units, self._kept)}
        result = self.score_kept(self._kept)
        result.update({
            "policy": policy,
            "kept": {u.name: int(k) for u, k in zip(self.units, self._kept)},
            "actions": list(self._actions),
            "budget_use": {b.key: float(b.price(self._kept) / b.limit) for b in self.budgets},
        })
        return result

    def score_kept(self, kept: np.ndarray) -> dict[str, Any]:
        """Prune to ``kept`` channels per unit, recalibrate, evaluate; the reward and its record."""
        t0 = time.perf_counter()
        policy = {u.name: float(1.0 - k / u.channels) for u, k in zip(self.units, kept)}
        model = self.pruner.prune(policy)
        t1 = time.perf_counter()
        record = self._record(kept, self._evaluate(model))
        t2 = time.perf_counter()
        reward = float(self.reward_fn(record))
        return {"metrics": record, "reward": reward, "episode_reward": reward,
                "timing": {"prune": t1 - t0, "evaluate": t2 - t1}}

    # -- what the baseline strategies need --------------------------------------------

    def kept_of_actions(self, actions: Sequence[float]) -> np.ndarray:
        """Channels kept per unit for raw actions, without clipping."""
        if len(actions) != self.num_units:
            raise AdcError(f"need {self.num_units} actions (one per unit), got {len(actions)}")
        return np.array([u.kept(self._sparsity_of(a), self.round_to) for u, a in zip(self.units, actions)], dtype=np.float64)

    def evaluate_actions(self, actions: Sequence[float]) -> float:
        """Reward of a policy given as actions, WITHOUT budget clipping (sensitivity analysis)."""
        return float(self.score_kept(self.kept_of_actions(actions))["reward"])

    def budget_fits(self, actions: Sequence[float]) -> bool:
        """Whether raw actions meet every budget."""
        return self._fits(self.kept_of_actions(actions))

    def unit_costs(self) -> list[float]:
        """Each unit's share of the first budget's cost (MACs or params) that depends on it."""
        return [float(x) for x in self._unit_share]

    def uniform_actions(self) -> list[float]:
        """The single action for every unit whose policy comes closest to the budget without exceeding it."""
        lo, hi = 0.0, 1.0
        if self.budget_fits([0.0] * self.num_units):
            return [0.0] * self.num_units
        for _ in range(40):
            mid = (lo + hi) / 2
            if self.budget_fits([mid] * self.num_units):
                hi = mid
            else:
                lo = mid
        return [hi] * self.num_units
