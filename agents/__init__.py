"""Search agents: AMC's DDPG (and TD3, SAC) on stable-baselines3, and the baselines.

``AGENTS`` maps names to :class:`Agent` classes; build one with
``make_agent(name, env, episodes=..., seed=..., **options)`` and resume a saved
one with ``load_agent(path, env)``.
"""

from agents.base import AGENTS, Agent, OnEpisode, load_agent, make_agent
from agents.baselines import RandomAgent, SensitivityAgent, UniformAgent
from agents.credit import MovingAverageBaseline, assign_episode_reward
from agents.ddpg import DDPGAgent
from agents.offpolicy import NoisyOffPolicyOptions, OffPolicyAgent, OffPolicyOptions
from agents.sac import SACAgent
from agents.td3 import TD3Agent

__all__ = [
    "AGENTS",
    "Agent",
    "DDPGAgent",
    "MovingAverageBaseline",
    "NoisyOffPolicyOptions",
    "OffPolicyAgent",
    "OffPolicyOptions",
    "OnEpisode",
    "RandomAgent",
    "SACAgent",
    "SensitivityAgent",
    "TD3Agent",
    "UniformAgent",
    "assign_episode_reward",
    "load_agent",
    "make_agent",
]
