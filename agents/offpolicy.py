"""stable-baselines3 off-policy algorithms (DDPG, TD3, SAC) set up as AMC.

What AMC needs and stable-baselines3 does not do by itself, and where it is done:

- **Credit assignment.** The replay buffer first stores SB3's per-step
  rewards (0 but at the last step). After each episode, before its gradient
  steps, :meth:`OffPolicyAgent.run` rewrites the episode's transitions: each
  gets the final reward minus a moving-average baseline and is marked
  terminal (:mod:`agents.credit` says why terminal). The agent owns the
  episode loop (``collect_rollouts`` for one episode, rewrite, ``train``), so
  the rewrite happens after the last transition is stored: a callback's
  ``on_step`` runs before it is.
- **Applied actions.** The environment clips each action so that the budget
  stays reachable and is used, and reports the clipped one in
  ``info["applied_action"]``; ``_store_transition`` stores that one, so the
  critic learns the value of what was really done.
- **A uniform start.** The first warm-up episode plays the uniform policy
  (one sparsity everywhere, meeting the budget): the search starts from the
  policy a user would otherwise take, its best is never worse than it on the
  reward, and the critic sees it. Random actions rarely land near it.
- **Exploration.** ``warmup`` episodes of uniform random actions, then (DDPG,
  TD3) a truncated normal around the actor's action whose sigma decays from
  0.5 to 0.05 over the planned episodes; SAC samples its own policy.
- **Learning rates.** SB3 applies one schedule to every optimizer at each
  ``train``; ``_update_learning_rate`` gives the actor and the critic their
  own (AMC: 1e-4 and 1e-3).
- **One update per transition** (SB3 ``gradient_steps=-1``): ``train`` runs
  as many gradient steps as the episode had units.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.base import Agent, OnEpisode
from agents.credit import MovingAverageBaseline, assign_episode_reward
from agents.noise import NoiseSchedule, truncated_normal

_SB3_INFO_KEYS = ("terminal_observation", "TimeLimit.truncated")


@dataclasses.dataclass(frozen=True)
class OffPolicyOptions:
    """Settings shared by the stable-baselines3 agents (defaults: AMC's).

    Attributes:
        warmup: Episodes of uniform random actions before learning; None means
            ``min(100, episodes // 4)`` (AMC: 100 of 400-800).
        actor_lr: Adam learning rate of the actor (AMC: 1e-4).
        critic_lr: Adam learning rate of the critic (AMC: 1e-3).
        tau: Soft target update coefficient (AMC: 0.01).
        batch_size: Minibatch size (AMC: 64).
        hidden: Hidden layer widths of actor and critic (AMC: 300, 300).
        buffer_episodes: Replay memory, in episodes (AMC: 100 per unit, i.e.
            the last 100 episodes); older transitions carry stale baselines.
        baseline_decay: Decay of the moving-average reward baseline.
        device: Torch device of the networks; these MLPs are fastest on CPU.
        threads: Torch CPU threads during gradient steps (restored afterwards,
            for the environment's evaluations): with 2 cores, one thread ran
            AMC's 300x300 networks 5x faster than two (0.7 vs 3.8 ms a step).
        start_uniform: Play the uniform policy as the first warm-up episode
            (needs at least one warm-up episode; the environment's
            ``uniform_actions()``).
    """

    warmup: int | None = None
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    hidden: tuple[int, ...] = (300, 300)
    buffer_episodes: int = 100
    baseline_decay: float = 0.95
    device: str = "cpu"
    threads: int = 1
    start_uniform: bool = True


@dataclasses.dataclass(frozen=True)
class NoisyOffPolicyOptions(OffPolicyOptions):
    """Settings of the deterministic-actor agents (DDPG, TD3).

    Attributes:
        noise_sigma: Sigma of the truncated-normal noise after warm-up (AMC: 0.5).
        noise_final_sigma: Sigma at the last planned episode; the per-episode
            decay is derived from it (AMC's fixed 0.95 is spent ~50 episodes after warm-up).
    """

    noise_sigma: float = 0.5
    noise_final_sigma: float = 0.05


class AmcAlgorithmMixin:
    """Mixed in before an SB3 off-policy algorithm: AMC exploration, applied actions, two learning rates.

    The ``amc_*`` attributes are set by :class:`OffPolicyAgent` and are not
    saved with the model (the agent saves and restores them).
    """

    _AMC_ATTRIBUTES = ("amc_rng", "amc_sigma", "amc_explore", "amc_lrs", "amc_final_info", "amc_scripted")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.amc_rng = np.random.default_rng(0)
        self.amc_sigma: float | None = None
        self.amc_explore = True
        self.amc_lrs: tuple[float, float] = (1e-4, 1e-3)
        self.amc_final_info: dict[str, Any] | None = None
        self.amc_scripted: list[float] = []
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self.amc_apply_learning_rates()

    def amc_apply_learning_rates(self) -> None:
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), *self._AMC_ATTRIBUTES]

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        # SB3 would set one scheduled rate on every optimizer; AMC trains the
        # actor ten times slower than the critic. Other optimizers (SAC's
        # entropy coefficient) follow the critic.
        actor_lr, critic_lr = self.amc_lrs
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            lr = actor_lr if optimizer is self.actor.optimizer else critic_lr
            for group in optimizer.param_groups:
                group["lr"] = lr

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        low, high = self.action_space.low, self.action_space.high
        if self.amc_scripted:
            action = np.full((n_envs, *self.action_space.shape), self.amc_scripted.pop(0))
        elif not self.amc_explore:
            action, _ = self.predict(self._last_obs, deterministic=True)
        elif self.num_timesteps < learning_starts:
            action = self.amc_rng.uniform(low, high, size=(n_envs, *self.action_space.shape))
        elif self.amc_sigma is None:
            action, _ = self.predict(self._last_obs, deterministic=False)
        else:
            mean, _ = self.predict(self._last_obs, deterministic=True)
            action = truncated_normal(self.amc_rng, mean, self.amc_sigma, low, high)
        action = np.asarray(action, dtype=np.float32)
        return action, self.policy.scale_action(action)

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray,
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        try:
            applied = np.array([[info["applied_action"]] for info in infos], dtype=np.float32)
        except KeyError:
            raise ValueError(
                "the environment must report the clipped action in info['applied_action'] at every step"
            ) from None
        if dones[0]:
            self.amc_final_info = {k: v for k, v in infos[0].items() if k not in _SB3_INFO_KEYS}
        super()._store_transition(  # type: ignore[misc]
            replay_buffer, self.policy.scale_action(applied), new_obs, reward, dones, infos
        )


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = th.get_num_threads()
    if threads > 0:
        th.set_num_threads(threads)
    try:
        yield
    finally:
        th.set_num_threads(previous)


class OffPolicyAgent(Agent):
    """An AMC agent on a stable-baselines3 off-policy algorithm; subclasses name the algorithm.

    Options: see :class:`OffPolicyOptions` (and :class:`NoisyOffPolicyOptions`).
    ``on_episode`` receives the environment's final info plus an ``"agent"``
    entry: ``phase`` (warmup / explore / exploit), ``sigma`` (None outside
    truncated-normal exploration), ``baseline``, ``advantage``.

    Exploitation episodes (``run(..., explore=False)``) play the actor's
    deterministic action and are stored and trained on like any other, so
    successive ones follow the still-improving actor.

    Building one seeds numpy's, torch's and Python's global generators with
    ``seed``: stable-baselines3 does so in its constructor.
    """

    algorithm_class: ClassVar[type[OffPolicyAlgorithm]]
    Options: ClassVar[type] = OffPolicyOptions
    can_exploit: ClassVar[bool] = True

    def __init__(self, env: gym.Env, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(env, episodes=episodes, seed=seed, **options)
        o = self.options
        self.warmup = min(100, self.episodes // 4) if o.warmup is None else int(o.warmup)
        self.baseline = MovingAverageBaseline(o.baseline_decay)
        self.noise: NoiseSchedule | None = None
        self.vec_env = DummyVecEnv([lambda: env])
        self.algo = self.algorithm_class(
            "MlpPolicy",
            self.vec_env,
            learning_rate=o.critic_lr,
            buffer_size=max(1, o.buffer_episodes) * self.num_units,
            learning_starts=self.warmup * self.num_units,
            batch_size=o.batch_size,
            tau=o.tau,
            gamma=1.0,
            train_freq=(1, "episode"),
            gradient_steps=-1,
            policy_kwargs={"net_arch": {"pi": list(o.hidden), "qf": list(o.hidden)}},
            seed=self.seed,
            device=o.device,
            **self._algorithm_kwargs(),
        )
        self._attach(np.random.default_rng(self.seed))

    def _algorithm_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the algorithm's constructor."""
        return {}

    def _attach(self, rng: np.random.Generator) -> None:
        algo = self.algo
        algo.amc_rng = rng
        algo.amc_lrs = (self.options.actor_lr, self.options.critic_lr)
        algo.amc_apply_learning_rates()

    def _phase(self, explore: bool) -> str:
        if not explore:
            return "exploit"
        return "warmup" if self.algo.num_timesteps < self.algo.learning_starts else "explore"

    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True) -> None:
        algo = self.algo
        algo._last_obs = None  # start on a fresh episode whatever the env did in between
        algo.amc_explore = explore
        _, callback = algo._setup_learn(episodes * self.num_units, callback=None, reset_num_timesteps=False)
        for _ in range(episodes):
            phase = self._phase(explore)
            if self.noise is not None:
                algo.amc_sigma = self.noise.sigma(self.episodes_done - self.warmup)
            algo.amc_final_info = None
            if phase == "warmup" and self.episodes_done == 0 and self.options.start_uniform:
                algo.amc_scripted = [float(a) for a in self.env.unwrapped.uniform_actions()]
                phase = "uniform"
            rollout = algo.collect_rollouts(
                algo.env,
                callback=callback,
                train_freq=algo.train_freq,
                replay_buffer=algo.replay_buffer,
                learning_starts=algo.learning_starts,
                log_interval=None,
            )
            info = algo.amc_final_info
            if info is None or "episode_reward" not in info:
                raise ValueError("the environment must report info['episode_reward'] at the final step")
            advantage = self.baseline.advantage(float(info["episode_reward"]))
            assign_episode_reward(algo.replay_buffer, rollout.episode_timesteps, advantage)
            if algo.num_timesteps > algo.learning_starts:
                with _torch_threads(self.options.threads):
                    algo.train(gradient_steps=rollout.episode_timesteps, batch_size=algo.batch_size)
            self.episodes_done += 1
            info["agent"] = {
                "phase": phase,
                "sigma": algo.amc_sigma if phase == "explore" else None,
                "baseline": self.baseline.value,
                "advantage": advantage,
            }
            if not on_episode(info):
                return

    def predict(self, observation: np.ndarray) -> float:
        action, _ = self.algo.predict(np.asarray(observation, dtype=np.float32), deterministic=True)
        return float(np.asarray(action).reshape(-1)[0])

    # -- persistence -------------------------------------------------------------------

    def _state(self, path: Path) -> dict[str, Any]:
        self.algo.save(path / "model.zip")
        self.algo.save_replay_buffer(path / "replay_buffer.pkl")
        np_state = np.random.get_state()
        return {
            "baseline": self.baseline.value,
            "rng": self.algo.amc_rng.bit_generator.state,
            # SB3 samples minibatches from numpy's global generator and SAC's
            # actions from torch's: save both so a resumed run continues as one.
            "numpy_global": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch_global": th.get_rng_state().tolist(),
        }

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        self.algo = self.algorithm_class.load(path / "model.zip", env=self.vec_env, device=self.options.device)
        self.algo.load_replay_buffer(path / "replay_buffer.pkl")
        self.baseline.value = state["baseline"]
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self._attach(rng)
        name, keys, *rest = state["numpy_global"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        th.set_rng_state(th.tensor(state["torch_global"], dtype=th.uint8))


class NoisyOffPolicyAgent(OffPolicyAgent):
    """An :class:`OffPolicyAgent` with a deterministic actor, explored with AMC's truncated normal."""

    Options: ClassVar[type] = NoisyOffPolicyOptions

    def __init__(self, env: gym.Env, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(env, episodes=episodes, seed=seed, **options)
        o = self.options
        self.noise = NoiseSchedule(o.noise_sigma, o.noise_final_sigma, max(1, self.episodes - self.warmup))
