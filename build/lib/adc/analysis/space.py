"""The policy space: which kept channel counts a search may give each unit.

Bounds (``min_keep`` / ``max_keep``, fractions of each unit's channels) and
rounding (``round_to``, a multiple of channels) are decided once, here, and
every part that enumerates or prices policies -- the environment's clipping,
the budgets' reachability check, the latency table's grid, the strategies --
reads them from one :class:`PolicySpace`, so they cannot disagree.

An *action* in [0, 1] is a position in the allowed sparsity range:
``sparsity = (1 - max_keep) + action * (max_keep - min_keep)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adc.analysis.cost import check_round_to
from adc.analysis.graph import ModelGraph, Unit
from adc.utils.errors import AdcError


@dataclass(frozen=True)
class PolicySpace:
    """Kept-channel bounds and rounding of every unit of one model.

    Attributes:
        graph: The model's graph.
        min_keep: Smallest kept fraction of any unit (AMC's reference: 0.2).
        max_keep: Largest kept fraction (1: a unit may stay whole).
        round_to: Kept counts are multiples of this (or the full width); grouped units round per group.
        min_kept, max_kept: Per unit, the fewest and most channels a policy may keep.
        choices: Per unit, every kept count a policy may give it, ascending.
    """

    graph: ModelGraph
    min_keep: float = 0.2
    max_keep: float = 1.0
    round_to: int = 1
    min_kept: np.ndarray = field(init=False, repr=False)
    max_kept: np.ndarray = field(init=False, repr=False)
    choices: list[np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.min_keep <= self.max_keep <= 1.0:
            raise AdcError(f"min_keep={self.min_keep}, max_keep={self.max_keep}: need 0 < min_keep <= max_keep <= 1")
        object.__setattr__(self, "round_to", check_round_to(self.round_to))
        units = self.graph.units
        lo = np.array([u.kept(1.0 - self.min_keep, self.round_to) for u in units], dtype=np.float64)
        hi = np.array([u.kept(1.0 - self.max_keep, self.round_to) for u in units], dtype=np.float64)
        object.__setattr__(self, "min_kept", lo)
        object.__setattr__(self, "max_kept", hi)
        object.__setattr__(self, "choices", [self._choices(u, a, b) for u, a, b in zip(units, lo, hi)])

    def _choices(self, unit: Unit, lo: float, hi: float) -> np.ndarray:
        counts = {unit.kept(1.0 - c / unit.channels, self.round_to) for c in range(1, unit.channels + 1)}
        return np.array(sorted(c for c in counts if lo <= c <= hi), dtype=np.float64)

    @property
    def units(self) -> list[Unit]:
        return self.graph.units

    @property
    def min_sparsity(self) -> float:
        return 1.0 - self.max_keep

    @property
    def max_sparsity(self) -> float:
        return 1.0 - self.min_keep

    def sparsity_of(self, action: float) -> float:
        """The sparsity an action in [0, 1] asks for (clipped into [0, 1] first)."""
        return self.min_sparsity + float(np.clip(action, 0.0, 1.0)) * (self.max_sparsity - self.min_sparsity)

    def action_of(self, sparsity: float) -> float:
        """The action that asks for ``sparsity``."""
        span = self.max_sparsity - self.min_sparsity
        return float(np.clip((sparsity - self.min_sparsity) / span, 0.0, 1.0)) if span > 0 else 0.0

    def kept_of_actions(self, actions: np.ndarray | list[float]) -> np.ndarray:
        """Channels kept per unit for one action per unit, rounded but not clipped to any budget."""
        if len(actions) != len(self.units):
            raise AdcError(f"need {len(self.units)} actions (one per unit), got {len(actions)}")
        return np.array([u.kept(self.sparsity_of(a), self.round_to) for u, a in zip(self.units, actions)],
                        dtype=np.float64)

    def policy_of(self, kept: np.ndarray) -> dict[str, float]:
        """Unit name -> sparsity for kept channel counts."""
        return {u.name: float(1.0 - k / u.channels) for u, k in zip(self.units, kept)}
