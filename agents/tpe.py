"""TPE, the tree-structured Parzen estimator (Bergstra et al., NeurIPS 2011), from Optuna.

One float parameter in [0, 1] per unit, the uniform policy enqueued as the
first trial (the policy a user would otherwise take), then Optuna's
``TPESampler``: multivariate (Falkner et al., BOHB, ICML 2018 -- the units'
actions trade against each other under a budget, so their joint density
matters) with the constant-liar strategy for the proposals of one round,
which are asked before any of them is scored. Each proposal is clipped onto
the budget by the environment; like CMA-ES (:mod:`adc.agents.cmaes`), TPE is
told by default the applied actions, recorded as a completed trial in place
of the proposal (which is closed as failed, so the sampler ignores it).
A density model of observed points (unlike CMA-ES, whose update assumes its
own samples), TPE can take any scored point as an observation, and the
applied one is the policy that was really scored. Measured on the synthetic
environment (``benchmarks/results/rivals_tuning.md``: 5 seeds, 200 episodes,
8 environments): applied 0.63 of the uniform-to-optimum gap against 0.62 for
the proposal (0.99 vs 0.89 on the agent tests' environment), multivariate
0.63 against 0.61 univariate; 5, 10 or 20 start-up trials are within noise
(0.65, 0.63, 0.66), so Optuna's default of 10 is kept. TPE is far behind
CMA-ES there on 12 and 30 units at 30% of the cost (0.20-0.36 vs 0.69-0.89).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from adc.agents.base import register_agent
from adc.agents.policy_search import PolicySearchAgent, check_learn_from
from adc.envs.vec_env import PruningVecEnv
from adc.utils.errors import AdcError


@dataclasses.dataclass(frozen=True)
class TPEOptions:
    """Settings of TPE.

    Attributes:
        startup: Random trials before TPE models the results (the uniform policy counts as one).
        multivariate: Model the actions jointly (True) or one by one.
        learn_from: ``applied`` (the clipped policy) or ``proposal``.
    """

    startup: int = 10
    multivariate: bool = True
    learn_from: str = "applied"


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial log lines and experimental-feature warnings off, restored afterwards."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


@register_agent("tpe")
class TPEAgent(PolicySearchAgent):
    """Optuna's TPE sampler, ask/tell in rounds of ``num_envs``. Options: :class:`TPEOptions`.

    Deterministic for a seed (the sampler is seeded; the study lives in memory).
    """

    Options: ClassVar[type] = TPEOptions

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(envs, episodes=episodes, seed=seed, **options)
        import optuna

        o = self.options
        check_learn_from(self.name, o.learn_from)
        if o.startup < 1:
            raise AdcError(f"option startup={o.startup} for agent 'tpe' must be at least 1")
        self._names = [f"unit{i:03d}" for i in range(self.num_units)]
        self._space = {name: optuna.distributions.FloatDistribution(0.0, 1.0) for name in self._names}
        with _quiet_optuna():
            sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=o.startup,
                                                 multivariate=o.multivariate, constant_liar=True)
            self.study = optuna.create_study(direction="maximize", sampler=sampler)
            self.study.enqueue_trial(dict(zip(self._names, envs.uniform_actions())))
        self._trials: list[Any] = []

    def _ask(self) -> np.ndarray:
        with _quiet_optuna():
            trial = self.study.ask(self._space)
        self._trials.append(trial)
        return np.array([trial.params[name] for name in self._names], dtype=np.float64)

    def _tell(self, proposal: np.ndarray, applied: np.ndarray, reward: float) -> None:
        import optuna

        trial = self._trials.pop(0)
        with _quiet_optuna():
            if self.options.learn_from == "proposal":
                self.study.tell(trial, reward)
                return
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            params = dict(zip(self._names, np.clip(applied, 0.0, 1.0).tolist()))
            self.study.add_trial(optuna.trial.create_trial(params=params, distributions=self._space, value=reward))
