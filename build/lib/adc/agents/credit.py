"""AMC credit assignment: every transition of an episode gets the episode's
final reward minus a moving-average baseline.

The pruning reward (accuracy of the pruned network) exists only once the whole
policy is chosen. AMC (He et al., ECCV 2018) gives that final reward, less a
moving-average baseline, to every transition of the episode, with discount 1.
A prototype of this recipe collapsed (mean episode accuracy 33%) without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer


@dataclasses.dataclass
class MovingAverageBaseline:
    """Exponential moving average of final rewards: ``b <- decay * b + (1 - decay) * R``.

    Args:
        decay: Weight of the old value; 0.95 averages over about 20 episodes.
        value: The current baseline; None before the first episode.
    """

    decay: float = 0.95
    value: float | None = None

    def advantage(self, reward: float) -> float:
        """Return ``reward - baseline`` (baseline before this episode), then update the baseline.

        The first episode initialises the baseline to its own reward (advantage 0).
        """
        if self.value is None:
            self.value = float(reward)
        advantage = float(reward) - self.value
        self.value = self.decay * self.value + (1 - self.decay) * float(reward)
        return advantage


def assign_episode_reward(buffer: ReplayBuffer, steps: int, value: float | Sequence[float]) -> np.ndarray:
    """Give each environment's episode value to its last ``steps`` transitions in ``buffer``; mark each terminal.

    Marking every transition terminal makes each critic target the episode's
    (baseline-subtracted) final reward itself: a Monte Carlo return with
    discount 1, since the true return of every step is the final reward. The
    AMC reference instead bootstraps (target ``r + Q(s', mu(s'))`` with the same
    ``r`` on every step), which makes ``Q`` at unit ``t`` estimate about
    ``(T - t)`` times the advantage: a scale that grows towards the first units
    and a bootstrapping error on top, for no extra information.

    Args:
        buffer: SB3's replay buffer (one column per environment).
        steps: Transitions per episode (the number of units).
        value: The advantage of each environment's episode (one number for every column, or one per column).

    Returns:
        The buffer positions rewritten, oldest first.
    """
    if steps > buffer.buffer_size:
        raise ValueError(f"an episode of {steps} steps does not fit a replay buffer of {buffer.buffer_size}")
    indices = (buffer.pos - steps + np.arange(steps)) % buffer.buffer_size
    values = np.broadcast_to(np.asarray(value, dtype=np.float32), (buffer.n_envs,))
    buffer.rewards[indices] = values[None, :]
    buffer.dones[indices] = 1.0
    return indices
