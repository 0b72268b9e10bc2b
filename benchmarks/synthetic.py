"""Synthetic cells: searches of made-up pruning problems with a known optimum, microseconds an episode.

A synthetic cell's model is ``synthetic:KIND`` and its budget ``cost=B`` (the
share of the cost kept). Kinds:

- ``hard6``: the agent tests' six units (sensitive units early and late);
- ``spread12`` / ``spread30``: 12 and 30 units (resnet20's and resnet56's
  counts) with sensitivities spread over two decades and unequal costs;
- ``noisy12``: ``spread12`` with a fixed pseudo-random error on every
  policy's reward (as a 1,000-image validation score has: the same policy
  always gets the same error), its size a tenth of the uniform policy's gap.

A row runs the engine's phases (:func:`adc.engine.loop.phase_plan`: explore,
exploit, refine by CMA-ES or Gaussian steps) with the variant's agent and
options, the observation without the clipping's interval unless the variant
sets ``observe_bounds`` (as the real environment). Its score is the share of
the gap between the uniform policy and the optimum that the best episode
(chosen on the possibly noisy reward) closes on the true reward: 0 is no
better than uniform, 1 the optimum; also at episode 100.
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic_env import SyntheticPruningEnv  # noqa: E402

KINDS = ("hard6", "spread12", "spread30", "noisy12")
HARD_SENSITIVITIES = [0.02, 2.0, 0.1, 1.0, 0.05, 0.5]
CHECKPOINT = 100


class NoisyPruningEnv(SyntheticPruningEnv):
    """The synthetic environment with a fixed error per policy (a hash of its rounded actions)."""

    def __init__(self, *args: Any, noise: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noise = noise

    def reward_of(self, actions: Sequence[float]) -> float:
        key = np.round(np.asarray(actions, dtype=np.float64), 3).tobytes()
        error = np.random.default_rng(zlib.crc32(key)).normal(0.0, self.noise)
        return super().reward_of(actions) + float(error)

    def true_reward(self, actions: Sequence[float]) -> float:
        return SyntheticPruningEnv.reward_of(self, actions)


class HideBounds(gym.ObservationWrapper):
    """The synthetic environment without the clipping's interval in its observation (as the real one by default)."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        observation = observation.copy()
        observation[5:7] = 0.0
        return observation


def make_env(kind: str, budget: float) -> SyntheticPruningEnv:
    """One of the environments of the module docs."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "hard6":
        return SyntheticPruningEnv(num_units=6, budget=budget, sensitivities=HARD_SENSITIVITIES)
    units = 30 if kind == "spread30" else 12
    costs = np.random.default_rng(units).uniform(0.5, 2.0, units)
    env = SyntheticPruningEnv(num_units=units, budget=budget, costs=costs, seed=units)
    if kind == "noisy12":
        gap = env.optimum() - env.reward_of(env.uniform_actions())
        env = NoisyPruningEnv(num_units=units, budget=budget, costs=costs, seed=units, noise=0.1 * gap)
    return env


def measure(kind: str, budget: float, agent_name: str, options: dict[str, Any], seed: int,
            episodes: int) -> dict[str, Any]:
    """One search of a synthetic cell with the engine's phases; the gap closed at the end and at episode 100."""
    from adc.agents import CMARefiner, Refiner, make_agent
    from adc.engine.loop import default_refine_episodes, phase_plan
    from adc.envs.vec_env import PruningVecEnv

    agent_options = dict(options.get("agent_options", {}))
    env = make_env(kind, budget)
    true = getattr(env, "true_reward", env.reward_of)
    uniform, optimum = true(env.uniform_actions()), env.optimum()
    envs = PruningVecEnv([lambda: env if options.get("observe_bounds") else HideBounds(env)])
    started = time.perf_counter()
    agent = make_agent(agent_name, envs, episodes=episodes, seed=seed, **agent_options)
    refine_episodes = options.get("refine_episodes", default_refine_episodes(episodes))
    explore, exploit, refine = phase_plan(episodes, 1, agent.can_exploit, options.get("exploit_episodes"),
                                          refine_episodes)
    history: list[dict[str, Any]] = []

    def on_episode(info: dict[str, Any]) -> bool:
        history.append({"reward": float(info["reward"]), "actions": list(info["actions"])})
        return True

    agent.run(explore, on_episode)
    if exploit:
        agent.run(exploit, on_episode, explore=False)
    if refine:
        if options.get("refine_method", "cmaes") == "cmaes":
            centre = max(history, key=lambda h: h["reward"])["actions"]
            CMARefiner(envs, centre, episodes=refine, seed=seed + explore + exploit).run(refine, on_episode)
        else:
            Refiner(envs, lambda: max(history, key=lambda h: h["reward"]), episodes=refine,
                    seed=seed + explore + exploit).run(refine, on_episode)

    def closed(n: int) -> float:
        best = max(history[:n], key=lambda h: h["reward"])  # chosen on the (noisy) reward, judged on the true one
        return float((true(best["actions"]) - uniform) / (optimum - uniform))

    record = {"gap_closed": closed(len(history)), "episodes": len(history), "search_s": time.perf_counter() - started}
    if len(history) > CHECKPOINT:  # the best so far at episode 100: how fast it gets there
        record[f"gap_closed_at_{CHECKPOINT}"] = closed(CHECKPOINT)
    return record
