"""TD3 (Fujimoto et al., 2018) with AMC's settings: twin critics, delayed actor
updates and target smoothing on top of the DDPG recipe of :mod:`agents.ddpg`.
"""

from __future__ import annotations

from stable_baselines3 import TD3

from adc.agents.base import register_agent
from adc.agents.offpolicy import AmcAlgorithmMixin, NoisyOffPolicyAgent


class AmcTD3(AmcAlgorithmMixin, TD3):
    """stable-baselines3 TD3 with AMC's exploration, applied-action storage and learning rates."""


@register_agent("td3")
class TD3Agent(NoisyOffPolicyAgent):
    """TD3 with truncated-normal exploration. Options: :class:`NoisyOffPolicyOptions`."""

    algorithm_class = AmcTD3
