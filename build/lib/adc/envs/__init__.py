"""Gymnasium environments of adc: ``adc/Prune-v0`` is :class:`adc.envs.pruning_env.PruningEnv`.

Installed as ``adc.envs`` (the project's top-level ``envs/`` folder).
"""

from gymnasium.envs.registration import register, registry

from adc.envs.pruning_env import OBSERVATION_FEATURES, PruningEnv
from adc.envs.task import ModelTask
from adc.envs.vec_env import PruningVecEnv

if "adc/Prune-v0" not in registry:
    register(id="adc/Prune-v0", entry_point="adc.envs.pruning_env:PruningEnv")

__all__ = ["OBSERVATION_FEATURES", "ModelTask", "PruningEnv", "PruningVecEnv"]
