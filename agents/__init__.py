"""Search agents: AMC's DDPG (and TD3, SAC) on stable-baselines3, and the strategies they are judged against
(uniform, random, sensitivity, and the black-box optimizers CMA-ES and TPE).

Installed as ``adc.agents`` (the project's top-level ``agents/`` folder).
``AGENTS`` maps names to :class:`Agent` classes; build one with
``make_agent(name, envs, episodes=..., seed=..., **options)`` and resume a
saved one with ``load_agent(path, envs)``.
"""

from adc.agents.base import AGENTS, Agent, OnEpisode, load_agent, make_agent, parse_options
from adc.agents.baselines import RandomAgent, SensitivityAgent, UniformAgent
from adc.agents.cmaes import CMAESAgent, CMAESOptions
from adc.agents.credit import MovingAverageBaseline, assign_episode_reward
from adc.agents.ddpg import DDPGAgent
from adc.agents.netadapt import NetAdaptAgent
from adc.agents.offpolicy import NoisyOffPolicyOptions, OffPolicyAgent, OffPolicyOptions
from adc.agents.policy_search import PolicySearchAgent
from adc.agents.refine import REFINE_METHODS, CMARefiner, Refinement, Refiner
from adc.agents.sac import SACAgent
from adc.agents.td3 import TD3Agent
from adc.agents.threshold import GlobalThresholdAgent
from adc.agents.tpe import TPEAgent, TPEOptions

__all__ = [
    "AGENTS",
    "REFINE_METHODS",
    "CMARefiner",
    "Agent",
    "CMAESAgent",
    "CMAESOptions",
    "DDPGAgent",
    "GlobalThresholdAgent",
    "MovingAverageBaseline",
    "NetAdaptAgent",
    "NoisyOffPolicyOptions",
    "OffPolicyAgent",
    "OffPolicyOptions",
    "OnEpisode",
    "PolicySearchAgent",
    "RandomAgent",
    "Refinement",
    "Refiner",
    "SACAgent",
    "SensitivityAgent",
    "TD3Agent",
    "TPEAgent",
    "TPEOptions",
    "UniformAgent",
    "assign_episode_reward",
    "load_agent",
    "make_agent",
    "parse_options",
]
