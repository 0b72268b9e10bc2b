"""SAC (Haarnoja et al., 2018) with AMC's credit assignment, applied-action
storage and warm-up; after the warm-up it explores by sampling its own
stochastic policy (no added noise). Its noise-free policy is the mean action.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from stable_baselines3 import SAC

from adc.utils.errors import AdcError
from adc.agents.base import register_agent
from adc.agents.offpolicy import AmcAlgorithmMixin, OffPolicyAgent, OffPolicyOptions


class AmcSAC(AmcAlgorithmMixin, SAC):
    """stable-baselines3 SAC with AMC's warm-up, applied-action storage and learning rates."""


@dataclasses.dataclass(frozen=True)
class SACOptions(OffPolicyOptions):
    """Settings of the SAC agent.

    Attributes:
        ent_coef: SB3's entropy coefficient: a number, or ``auto`` / ``auto_<initial>``
            to learn it. The advantages here are a few tenths, so SB3's initial
            1.0 would let entropy drown the reward for hundreds of updates.
    """

    ent_coef: str = "auto_0.01"


@register_agent("sac")
class SACAgent(OffPolicyAgent):
    """SAC; the entropy coefficient is learned with the critic's rate. Options: :class:`SACOptions`."""

    algorithm_class = AmcSAC
    Options: ClassVar[type] = SACOptions

    def _algorithm_kwargs(self) -> dict[str, Any]:
        ent_coef = str(self.options.ent_coef)
        try:
            return {"ent_coef": float(ent_coef)}
        except ValueError:
            pass
        initial = ent_coef.removeprefix("auto").removeprefix("_")
        try:
            if ent_coef.startswith("auto") and (not initial or float(initial) > 0):
                return {"ent_coef": ent_coef}
        except ValueError:
            pass
        raise AdcError(f"option ent_coef={ent_coef!r} for agent 'sac': use a number, 'auto' or 'auto_<initial>'")
