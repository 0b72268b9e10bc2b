"""DDPG as in AMC (He et al., ECCV 2018), on stable-baselines3.

Actor and critic with two hidden layers of 300, Adam 1e-4 / 1e-3, tau 0.01,
batch 64, discount 1, warm-up episodes of random actions, then a truncated
normal around the actor's action. See :mod:`agents.offpolicy` for how the
AMC parts (credit assignment, applied actions, two learning rates) are done.
"""

from __future__ import annotations

from stable_baselines3 import DDPG

from adc.agents.base import register_agent
from adc.agents.offpolicy import AmcAlgorithmMixin, NoisyOffPolicyAgent


class AmcDDPG(AmcAlgorithmMixin, DDPG):
    """stable-baselines3 DDPG with AMC's exploration, applied-action storage and learning rates."""


@register_agent("ddpg")
class DDPGAgent(NoisyOffPolicyAgent):
    """AMC's agent: DDPG with truncated-normal exploration. Options: :class:`NoisyOffPolicyOptions`."""

    algorithm_class = AmcDDPG
