"""Gymnasium environments of adc: ``adc/Prune-v0`` is :class:`envs.pruning_env.PruningEnv`."""

from gymnasium.envs.registration import register, registry

from envs.pruning_env import PruningEnv

if "adc/Prune-v0" not in registry:
    register(id="adc/Prune-v0", entry_point="envs.pruning_env:PruningEnv")

__all__ = ["PruningEnv"]
