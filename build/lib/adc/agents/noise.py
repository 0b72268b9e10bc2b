"""AMC's exploration noise: a truncated normal around the actor's action.

AMC samples each action from a normal distribution centred on the actor's
output, truncated to the action bounds, with sigma 0.5 decaying each episode
after the warm-up. The reference decays by 0.95 per episode, which is spent
about 50 episodes after warm-up; adc scales the decay to the run's length.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """Sigma ``initial * decay**k`` after ``k`` post-warm-up episodes, reaching ``final`` at the end.

    Args:
        initial: Sigma of the first episode after warm-up (AMC: 0.5).
        final: Sigma of the last planned episode.
        episodes: Number of planned post-warm-up episodes the decay is spread over.
    """

    initial: float = 0.5
    final: float = 0.05
    episodes: int = 1

    @property
    def decay(self) -> float:
        if self.initial <= 0:
            return 1.0
        return (max(self.final, 1e-12) / self.initial) ** (1 / max(1, self.episodes - 1))

    def sigma(self, episode: int) -> float:
        """Sigma of the ``episode``-th post-warm-up episode (0-based); ``final`` past the plan."""
        return self.initial * self.decay ** min(max(0, episode), max(0, self.episodes - 1))


def truncated_normal(
    rng: np.random.Generator, mean: np.ndarray, sigma: float, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """Sample ``N(mean, sigma)`` truncated to ``[low, high]``, elementwise, by rejection.

    Rejection keeps the draws a pure function of ``rng``; with the mean inside
    the bounds at least a third of the draws are accepted at any sigma.
    """
    mean = np.clip(np.asarray(mean, dtype=np.float64), low, high)
    if sigma <= 0:
        return mean
    out = mean.copy()
    pending = np.ones(mean.shape, dtype=bool)
    for _ in range(100):
        draw = rng.normal(mean, sigma)
        ok = pending & (draw >= low) & (draw <= high)
        out[ok] = draw[ok]
        pending &= ~ok
        if not pending.any():
            break
    return out
