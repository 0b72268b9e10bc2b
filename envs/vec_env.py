"""N pruning episodes stepped together, their finished policies scored at the same time.

Every episode has the same length (one step per unit), so N environments
that start together finish together. :class:`PruningVecEnv` is
stable-baselines3's ``DummyVecEnv`` with one change: environments that can
split a step (:meth:`PruningEnv.advance` / :meth:`PruningEnv.conclude`) are
advanced one by one -- clipping is cheap -- and when their episodes end, the
N finished policies go to the task's ``score_many`` in one call, which a
search with workers evaluates in parallel. The results come back in
environment order whatever order the workers finish in, so the same seed gives
the same search. Environments without the split (the synthetic one of the
tests) are stepped as ``DummyVecEnv`` steps them.

The vector environment also answers the :class:`~adc.envs.contract.PruningTask`
questions of the task its environments share, so agents never reach into
``env.unwrapped``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from adc.envs.contract import PruningTask


class PruningVecEnv(DummyVecEnv):
    """``num_envs`` pruning environments of one task (see the module docs).

    Args:
        env_fns: Functions that each build one environment; each environment
            has a ``task`` attribute (the shared :class:`~adc.envs.contract.PruningTask`).
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        super().__init__(env_fns)
        self.task: PruningTask = self.envs[0].unwrapped.task
        self.num_units = int(self.task.num_units)

    @classmethod
    def of(cls, make_env: Callable[[], gym.Env], num_envs: int = 1) -> PruningVecEnv:
        """``num_envs`` environments built by ``make_env``."""
        return cls([make_env for _ in range(num_envs)])

    # -- the PruningTask questions ------------------------------------------------------

    def uniform_actions(self) -> list[float]:
        return list(self.task.uniform_actions())

    def unit_costs(self) -> list[float]:
        return list(self.task.unit_costs())

    def budget_fits(self, actions: Sequence[float]) -> bool:
        return bool(self.task.budget_fits(actions))

    def resource(self, actions: Sequence[float]) -> float:
        return float(self.task.resource(actions))

    def threshold_actions(self, threshold: float) -> list[float]:
        return [float(a) for a in self.task.threshold_actions(threshold)]

    def evaluate_actions(self, batch: Sequence[Sequence[float]]) -> list[float]:
        return list(self.task.evaluate_actions(batch))

    # -- stepping ------------------------------------------------------------------------

    def step_wait(self) -> VecEnvStepReturn:
        envs = [e.unwrapped for e in self.envs]
        if not all(hasattr(e, "advance") for e in envs):
            return super().step_wait()
        results = [env.advance(self.actions[i]) for i, env in enumerate(envs)]
        finished = [i for i, (_, _, done) in enumerate(results) if done]
        scores = dict(zip(finished, self.task.score_many([envs[i].kept for i in finished]))) if finished else {}
        for i, (obs, info, done) in enumerate(results):
            self.buf_rews[i] = 0.0
            if done:
                info.update(envs[i].conclude(scores[i]))
                self.buf_rews[i] = float(scores[i].reward)
            self.buf_dones[i] = done
            info["TimeLimit.truncated"] = False
            self.buf_infos[i] = info
            if done:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = self.envs[i].reset()
            self._save_obs(i, obs)
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), deepcopy(self.buf_infos)

    def play(self, actions: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
        """Play one episode per action list (at most ``num_envs``) and return their final infos, in order.

        For strategies that choose whole policies at once (random search,
        CMA-ES, ...). Environments beyond ``len(actions)`` sit the round out.
        """
        if not 1 <= len(actions) <= self.num_envs:
            raise ValueError(f"play takes 1 to {self.num_envs} action lists, got {len(actions)}")
        envs = [e.unwrapped for e in self.envs[: len(actions)]]
        for env in envs:
            env.reset()
        finals: list[dict[str, Any]] = [{} for _ in envs]
        if all(hasattr(e, "advance") for e in envs):
            for unit in range(self.num_units):
                for i, env in enumerate(envs):
                    _, info, _ = env.advance(np.array([actions[i][unit]], dtype=np.float32))
                    finals[i] = info
            for i, scored in enumerate(self.task.score_many([env.kept for env in envs])):
                finals[i].update(envs[i].conclude(scored))
            return finals
        for i, env in enumerate(envs):
            for unit in range(self.num_units):
                _, _, terminated, truncated, info = env.step(np.array([actions[i][unit]], dtype=np.float32))
            if not terminated:
                raise RuntimeError(f"the environment did not terminate after {self.num_units} steps (num_units)")
            finals[i] = dict(info)
        return finals
