"""stable-baselines3 off-policy algorithms (DDPG, TD3, SAC) set up as AMC.

What AMC needs and stable-baselines3 does not do by itself, and where it is done:

- **Rounds of N episodes.** The agent acts on a
  :class:`~adc.envs.vec_env.PruningVecEnv` of N environments; every episode
  has ``num_units`` steps, so one ``collect_rollouts`` of ``num_units`` vector
  steps plays one round of N episodes (SB3 allows episodic training with one
  environment only; step-counted rounds are the same thing for N = 1).
- **Credit assignment.** The replay buffer first stores SB3's per-step
  rewards (0 but at the last step). After each round, before its gradient
  steps, :meth:`OffPolicyAgent.run` rewrites the round's transitions: each
  episode's get its final reward minus a moving-average baseline (updated
  episode by episode, in environment order) and are marked terminal
  (:mod:`adc.agents.credit` says why terminal). The agent owns the loop
  (``collect_rollouts``, rewrite, ``train``), so the rewrite happens after the
  last transition is stored: a callback's ``on_step`` runs before it is.
- **Applied actions.** The environment clips each action so that the budget
  stays reachable and is used, and reports the clipped one in
  ``info["applied_action"]``; ``_store_transition`` stores that one, so the
  critic learns the value of what was really done.
- **Exploration** is an :class:`AmcExploration` object the agent owns and
  hands to the algorithm at construction; the algorithm's ``_sample_action``
  asks it for each step's actions. The first warm-up episode plays the
  uniform policy (a uniform start: the search's best is never worse than it on
  the reward); then ``warmup`` episodes of uniform random actions; then (DDPG,
  TD3) a truncated normal around the actor's action whose sigma decays from
  0.5 to 0.05 over the planned episodes; SAC samples its own policy.
  Exploitation rounds play the actor without noise in the first environment
  and with the final, smallest sigma in the others (N copies of one
  deterministic policy would waste N - 1 evaluations).
- **Learning rates.** SB3 applies one schedule to every optimizer at each
  ``train``; ``_update_learning_rate`` gives the actor and the critic their
  own (AMC: 1e-4 and 1e-3).
- **One update per transition**: ``train`` runs as many gradient steps as the
  round had transitions (N x ``num_units``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from adc.agents.base import Agent, OnEpisode, OnRound
from adc.agents.credit import MovingAverageBaseline, assign_episode_reward
from adc.agents.noise import NoiseSchedule, truncated_normal
from adc.envs import contract
from adc.envs.vec_env import PruningVecEnv
from adc.utils.device import torch_threads
from adc.utils.errors import AdcError

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
            for the environment's evaluations): on a 2-core machine one thread ran
            AMC's 300x300 networks several times faster than two.
        start_uniform: Play the uniform policy as the first warm-up episode
            (needs at least one warm-up episode; the task's ``uniform_actions()``).
        updates_per_step: Gradient steps a round per transition it stored (AMC: 1).
        warmup_sigma: Warm-up actions: None draws them uniform in [0, 1] (AMC); a
            sigma draws each from a truncated normal of that sigma around the
            uniform policy's action at its step (a warm start from the uniform
            policy: at tight budgets most clipped uniform-random policies are
            worse than it, ``benchmarks/results/fashion_mnist_v2.md``).
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
    updates_per_step: float = 1.0
    warmup_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.warmup_sigma is not None and not 0.0 < self.warmup_sigma <= 1.0:
            raise AdcError(f"agent option warmup_sigma={self.warmup_sigma}: must be in (0, 1], or unset for AMC's "
                           "uniform draws")


@dataclasses.dataclass(frozen=True)
class NoisyOffPolicyOptions(OffPolicyOptions):
    """Settings of the deterministic-actor agents (DDPG, TD3).

    Attributes:
        noise_sigma: Sigma of the truncated-normal noise after warm-up (AMC: 0.5).
        noise_final_sigma: Sigma at the last planned episode; the per-episode
            decay is derived from it (AMC's fixed 0.95 is spent ~50 episodes after warm-up).
        clone_best: Self-imitation (Oh et al., 2018): after each round's updates,
            this many full-batch steps regress the actor onto the applied actions
            of the best episode so far, on that episode's observations (0: off).
        clone_lr: Adam learning rate of those steps.
        clone_once: Clone only once, at the end of the warm-up (a warm start from
            its best episode, the uniform policy at the least) instead of every round.
    """

    noise_sigma: float = 0.5
    noise_final_sigma: float = 0.05
    clone_best: int = 0
    clone_lr: float = 1e-3
    clone_once: bool = False


class AmcExploration:
    """How the algorithm picks each step's actions in the current round (owned by the agent).

    Args:
        rng: The generator of warm-up actions and exploration noise.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.explore = True
        self.sigma: float | None = None
        self.quiet_sigma: float | None = None
        self.scripted: list[float] = []
        self.warm_centres: list[float] | None = None
        self.warm_sigma = 0.0
        self.step = 0

    def warm_around(self, centres: list[float], sigma: float) -> None:
        """Draw warm-up actions around ``centres`` (one per step of an episode) instead of uniform in the bounds."""
        self.warm_centres, self.warm_sigma = list(centres), float(sigma)

    def start_round(self, *, explore: bool, sigma: float | None, quiet_sigma: float | None = None,
                    scripted: list[float] | None = None) -> None:
        """Set the round's mode.

        Args:
            explore: False plays the actor (exploitation).
            sigma: Truncated-normal sigma around the actor (None: the algorithm's own sampling).
            quiet_sigma: In exploitation rounds, the sigma of every environment but the first.
            scripted: Actions the first environment plays, one per step (the uniform start).
        """
        self.explore, self.sigma, self.quiet_sigma = explore, sigma, quiet_sigma
        self.scripted = list(scripted or [])
        self.step = 0

    def _warmup(self, step: int, shape: tuple[int, ...], low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Warm-up actions of every environment at ``step`` of the round's episodes."""
        if self.warm_centres is None:
            return self.rng.uniform(low, high, size=shape)
        centre = np.full(shape, self.warm_centres[step % len(self.warm_centres)], dtype=np.float64)
        return truncated_normal(self.rng, centre, self.warm_sigma, low, high)

    def sample(self, algo: OffPolicyAlgorithm, learning_starts: int, n_envs: int) -> np.ndarray:
        """The actions of one vector step (in the action space's bounds)."""
        space = algo.action_space
        low, high = space.low, space.high
        shape = (n_envs, *space.shape)
        step, self.step = self.step, self.step + 1
        if self.scripted:
            first = self.scripted.pop(0)
            if n_envs == 1:
                return np.full(shape, first, dtype=np.float32)
            action = self._warmup(step, shape, low, high)
            action[0] = first
        elif not self.explore:
            action, _ = algo.predict(algo._last_obs, deterministic=True)
            if n_envs > 1 and self.quiet_sigma:
                action[1:] = truncated_normal(self.rng, action[1:], self.quiet_sigma, low, high)
        elif algo.num_timesteps < learning_starts:
            action = self._warmup(step, shape, low, high)
        elif self.sigma is None:
            action, _ = algo.predict(algo._last_obs, deterministic=False)
        else:
            mean, _ = algo.predict(algo._last_obs, deterministic=True)
            action = truncated_normal(self.rng, mean, self.sigma, low, high)
        return np.asarray(action, dtype=np.float32)


class AmcAlgorithmMixin:
    """Mixed in before an SB3 off-policy algorithm: AMC exploration, applied actions, two learning rates.

    Args:
        exploration: The agent's :class:`AmcExploration` (not saved with the model: the agent saves its state).
        actor_lr, critic_lr: The two learning rates (SB3's ``learning_rate`` is ignored).
    """

    def __init__(self, *args: Any, exploration: AmcExploration | None = None, actor_lr: float = 1e-4,
                 critic_lr: float = 1e-3, **kwargs: Any) -> None:
        self.exploration = exploration or AmcExploration(np.random.default_rng(0))
        self.learning_rates = (actor_lr, critic_lr)
        super().__init__(*args, **kwargs)

    def attach(self, exploration: AmcExploration, actor_lr: float, critic_lr: float) -> None:
        """Give a loaded algorithm its exploration and learning rates (they are not saved with it)."""
        self.exploration = exploration
        self.learning_rates = (actor_lr, critic_lr)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])

    def _setup_model(self) -> None:
        super()._setup_model()
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "exploration", "learning_rates"]

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        # SB3 would set one scheduled rate on every optimizer; AMC trains the
        # actor ten times slower than the critic. Other optimizers (SAC's
        # entropy coefficient) follow the critic.
        actor_lr, critic_lr = self.learning_rates
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            lr = actor_lr if optimizer is self.actor.optimizer else critic_lr
            for group in optimizer.param_groups:
                group["lr"] = lr

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        action = self.exploration.sample(self, learning_starts, n_envs)
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
            applied = np.array([[info[contract.APPLIED_ACTION]] for info in infos], dtype=np.float32)
        except KeyError:
            raise ValueError(
                "the environment must report the clipped action in info['applied_action'] at every step"
            ) from None
        super()._store_transition(  # type: ignore[misc]
            replay_buffer, self.policy.scale_action(applied), new_obs, reward, dones, infos
        )


class _FinalInfos(BaseCallback):
    """Keeps the final info of every episode that ends during a rollout, in environment order."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: dict[int, dict[str, Any]] = {}

    def _on_step(self) -> bool:
        for i, (done, info) in enumerate(zip(self.locals["dones"], self.locals["infos"])):
            if done:
                self.infos[i] = {k: v for k, v in info.items() if k not in _SB3_INFO_KEYS}
        return True


class OffPolicyAgent(Agent):
    """An AMC agent on a stable-baselines3 off-policy algorithm; subclasses name the algorithm.

    Options: see :class:`OffPolicyOptions` (and :class:`NoisyOffPolicyOptions`).
    ``on_episode`` receives the environment's final info plus an ``"agent"``
    entry: ``phase`` (uniform / warmup / explore / exploit), ``sigma`` (None
    outside truncated-normal exploration), ``baseline``, ``advantage``.

    Exploitation episodes (``run(..., explore=False)``) play the actor's
    deterministic action and are stored and trained on like any other, so
    successive ones follow the still-improving actor.

    Building one seeds numpy's, torch's and Python's global generators with
    ``seed``: stable-baselines3 does so in its constructor.
    """

    algorithm_class: ClassVar[type[OffPolicyAlgorithm]]
    Options: ClassVar[type] = OffPolicyOptions
    can_exploit: ClassVar[bool] = True

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(envs, episodes=episodes, seed=seed, **options)
        o = self.options
        self.warmup = min(100, self.episodes // 4) if o.warmup is None else int(o.warmup)
        self.baseline = MovingAverageBaseline(o.baseline_decay)
        self.noise: NoiseSchedule | None = None
        self.exploration = AmcExploration(np.random.default_rng(self.seed))
        if o.warmup_sigma is not None:
            self.exploration.warm_around(self.envs.uniform_actions(), o.warmup_sigma)
        self.algo = self.algorithm_class(
            "MlpPolicy",
            envs,
            learning_rate=o.critic_lr,
            buffer_size=max(1, o.buffer_episodes) * self.num_units,
            learning_starts=self.warmup * self.num_units,
            batch_size=o.batch_size,
            tau=o.tau,
            gamma=1.0,
            train_freq=(self.num_units, "step"),
            gradient_steps=-1,
            policy_kwargs={"net_arch": {"pi": list(o.hidden), "qf": list(o.hidden)}},
            seed=self.seed,
            device=o.device,
            exploration=self.exploration,
            actor_lr=o.actor_lr,
            critic_lr=o.critic_lr,
            **self._algorithm_kwargs(),
        )

    def _algorithm_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the algorithm's constructor."""
        return {}

    def _phase(self, explore: bool) -> str:
        if not explore:
            return "exploit"
        return "warmup" if self.algo.num_timesteps < self.algo.learning_starts else "explore"

    def _sigma(self) -> float | None:
        return None if self.noise is None else self.noise.sigma(self.episodes_done - self.warmup)

    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True, on_round: OnRound | None = None) -> None:
        """Play ``ceil(episodes / num_envs)`` rounds (the engine asks for whole rounds)."""
        algo = self.algo
        algo._last_obs = None  # start on a fresh episode whatever the env did in between
        final = _FinalInfos()
        _, callback = algo._setup_learn(episodes * self.num_units, callback=final, reset_num_timesteps=False)
        played = 0
        while played < episodes:
            phase = self._phase(explore)
            phases = [phase] * self.num_envs
            scripted = None
            if phase == "warmup" and self.episodes_done == 0 and self.options.start_uniform:
                scripted = [float(a) for a in self.envs.uniform_actions()]
                phases[0] = "uniform"
            sigma = self._sigma()
            quiet = self.noise.final if (self.noise is not None and not explore) else None
            self.exploration.start_round(explore=explore, sigma=sigma if phase == "explore" else None,
                                         quiet_sigma=quiet, scripted=scripted)
            final.infos.clear()
            rollout = algo.collect_rollouts(algo.env, callback=callback, train_freq=algo.train_freq,
                                            replay_buffer=algo.replay_buffer, learning_starts=algo.learning_starts,
                                            log_interval=None)
            if len(final.infos) != self.num_envs or any(contract.REWARD not in i for i in final.infos.values()):
                raise ValueError("every environment must end its episode after num_units steps, "
                                 "reporting info['reward'] at the final step")
            rewards = [float(final.infos[i][contract.REWARD]) for i in range(self.num_envs)]
            advantages = [self.baseline.advantage(r) for r in rewards]
            positions = assign_episode_reward(algo.replay_buffer, self.num_units, advantages)
            self._remember(positions, rewards)
            if algo.num_timesteps > algo.learning_starts:
                first = algo.num_timesteps - rollout.episode_timesteps <= algo.learning_starts
                steps = max(1, round(rollout.episode_timesteps * self.options.updates_per_step))
                with torch_threads(self.options.threads):
                    algo.train(gradient_steps=steps, batch_size=algo.batch_size)
                    self._after_train(first)
            keep_going = True
            for i in range(self.num_envs):
                self.episodes_done += 1
                info = final.infos[i]
                info[contract.AGENT] = {"phase": phases[i], "sigma": sigma if phases[i] == "explore" else None,
                                        "baseline": self.baseline.value, "advantage": advantages[i]}
                keep_going = on_episode(info) and keep_going
            played += self.num_envs
            if on_round is not None:
                keep_going = on_round() and keep_going
            if not keep_going:
                return

    def _remember(self, positions: np.ndarray, rewards: list[float]) -> None:
        """Called after each round with its transitions' buffer positions and its episodes' rewards."""

    def _after_train(self, first: bool) -> None:
        """Called after each round's gradient steps (``first``: the first round that trained)."""

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
            "rng": self.exploration.rng.bit_generator.state,
            # SB3 samples minibatches from numpy's global generator and SAC's
            # actions from torch's: save both so a resumed run continues as one.
            "numpy_global": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch_global": th.get_rng_state().tolist(),
        }

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        self.algo = self.algorithm_class.load(path / "model.zip", env=self.envs, device=self.options.device)
        self.algo.load_replay_buffer(path / "replay_buffer.pkl")
        self.baseline.value = state["baseline"]
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self.exploration = AmcExploration(rng)
        self.algo.attach(self.exploration, self.options.actor_lr, self.options.critic_lr)
        name, keys, *rest = state["numpy_global"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        th.set_rng_state(th.tensor(state["torch_global"], dtype=th.uint8))


class NoisyOffPolicyAgent(OffPolicyAgent):
    """An :class:`OffPolicyAgent` with a deterministic actor, explored with AMC's truncated normal."""

    Options: ClassVar[type] = NoisyOffPolicyOptions

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(envs, episodes=episodes, seed=seed, **options)
        o = self.options
        self.noise = NoiseSchedule(o.noise_sigma, o.noise_final_sigma, max(1, self.episodes - self.warmup))
        self.elite: tuple[float, np.ndarray, np.ndarray] | None = None  # reward, observations, scaled actions
        self._clone_optimizer: th.optim.Optimizer | None = None

    # -- self-imitation (clone_best) ------------------------------------------------------

    def _remember(self, positions: np.ndarray, rewards: list[float]) -> None:
        if not self.options.clone_best:
            return
        buffer = self.algo.replay_buffer
        for i, reward in enumerate(rewards):
            if self.elite is None or reward > self.elite[0]:
                self.elite = (reward, buffer.observations[positions, i].copy(), buffer.actions[positions, i].copy())

    def _after_train(self, first: bool) -> None:
        o = self.options
        if not o.clone_best or self.elite is None or (o.clone_once and not first):
            return
        actor = self.algo.actor
        if self._clone_optimizer is None:
            self._clone_optimizer = th.optim.Adam(actor.parameters(), lr=o.clone_lr)
        observations = th.as_tensor(self.elite[1], dtype=th.float32, device=self.algo.device)
        target = th.as_tensor(self.elite[2], dtype=th.float32, device=self.algo.device)
        actor.set_training_mode(True)
        for _ in range(o.clone_best):
            loss = th.nn.functional.mse_loss(actor(observations), target)
            self._clone_optimizer.zero_grad()
            loss.backward()
            self._clone_optimizer.step()
        actor.set_training_mode(False)

    def _state(self, path: Path) -> dict[str, Any]:
        state = super()._state(path)
        if self.elite is not None:
            state["elite"] = [self.elite[0], self.elite[1].tolist(), self.elite[2].tolist()]
        if self._clone_optimizer is not None:
            th.save(self._clone_optimizer.state_dict(), path / "clone_optimizer.pt")
        return state

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        super()._restore(state, path)
        if "elite" in state:
            reward, observations, actions = state["elite"]
            self.elite = (reward, np.asarray(observations, dtype=np.float32), np.asarray(actions, dtype=np.float32))
        if (path / "clone_optimizer.pt").is_file():
            self._clone_optimizer = th.optim.Adam(self.algo.actor.parameters(), lr=self.options.clone_lr)
            self._clone_optimizer.load_state_dict(th.load(path / "clone_optimizer.pt", weights_only=True))
