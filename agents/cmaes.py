"""CMA-ES (Hansen & Ostermeier, 2001) over the per-unit actions, from the ``cma`` library.

The search distribution is a Gaussian over the action vector in [0, 1]^n,
kept in the box by ``cma``'s bound transformation and centred at first on the
uniform policy (the policy a user would otherwise take), which is also the
first proposal (injected), so the best reward is never below uniform's. Each
proposal is clipped onto the budget by the environment.

**Which point CMA-ES is told: the proposal** (``learn_from="proposal"``),
with the reward of the policy it was clipped to. That is an exact observation
of the objective CMA-ES searches (the reward of a proposal after clipping),
and CMA-ES's update is a step on the likelihood of its *own* samples: it must
be told points its distribution drew. The plateaus clipping creates (a
coordinate a budget cap overrides changes nothing) are harmless to a
rank-based method. Telling the applied actions instead (Lamarckian repair,
``learn_from="applied"``) looks attractive -- the distribution would follow
policies that were really played -- but ``cma`` must treat such a point as
injected and clip its Mahalanobis length (Hansen, 2011, "Injecting external
solutions into CMA-ES"); where the budget clips hard, the point it learns from
is then neither the proposal nor the played policy. Measured on the synthetic
environment (``benchmarks/results/rivals_tuning.md``: 5 seeds, 200 episodes,
8 environments), telling the proposal closed 0.85 of the uniform-to-optimum
gap on average against 0.80, most at the tight budget (0.69 vs 0.54 and 0.75
vs 0.54 at 30% of the cost). The step size 0.1 (a tenth of the box; 0.05 and
0.2 closed 0.80 and 0.79) and ``cma``'s population size (6: 0.86, 20: 0.82)
were chosen there.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from adc.agents.base import register_agent
from adc.agents.policy_search import PolicySearchAgent, check_learn_from
from adc.envs.vec_env import PruningVecEnv
from adc.utils.errors import AdcError


def cma_strategy(x0: Sequence[float], sigma0: float, popsize: int, rng: np.random.Generator) -> Any:
    """A ``cma.CMAEvolutionStrategy`` over actions in [0, 1], quiet, drawing its normals from ``rng``.

    ``cma``'s bound transformation keeps proposals in the box; no global seeding (``seed`` nan),
    so the strategy is deterministic for ``rng`` and leaves numpy's global generator alone.
    """
    import cma

    return cma.CMAEvolutionStrategy(np.clip(np.asarray(x0, dtype=np.float64), 0.0, 1.0), sigma0, {
        "bounds": [0.0, 1.0], "popsize": popsize, "seed": np.nan,
        "randn": lambda *shape: rng.standard_normal(shape), "verbose": -9, "verb_log": 0, "verb_disp": 0})


class Generations:
    """A CMA-ES asked one proposal at a time and told one reward at a time (it learns a generation at once).

    Args:
        es: The ``cma.CMAEvolutionStrategy``.
    """

    def __init__(self, es: Any) -> None:
        self.es = es
        self._generation: list[np.ndarray] = []
        self._asked = 0
        self._results: list[tuple[np.ndarray, float]] = []

    def room(self) -> int:
        """Proposals left in the current generation."""
        return self.es.popsize - self._asked

    def ask(self) -> np.ndarray:
        """The next proposal of the generation (a new generation is drawn when the last was told)."""
        if self._asked == 0:
            self._generation = [np.asarray(x, dtype=np.float64) for x in self.es.ask()]
        proposal = self._generation[self._asked]
        self._asked += 1
        return proposal.copy()

    def tell(self, point: np.ndarray, reward: float) -> None:
        """``point`` earned ``reward``; the strategy learns when its whole generation is told."""
        import cma

        self._results.append((np.array(point, dtype=np.float64), -reward))  # cma minimises
        if len(self._results) == self.es.popsize:
            points, values = zip(*self._results)
            with warnings.catch_warnings():  # told applied actions, cma misses the injected uniform proposal
                warnings.simplefilter("ignore", cma.evolution_strategy.InjectionWarning)
                self.es.tell(list(points), list(values))
            self._results, self._asked = [], 0


@dataclasses.dataclass(frozen=True)
class CMAESOptions:
    """Settings of CMA-ES.

    Attributes:
        popsize: Policies a generation. None: ``cma``'s default ``4 + 3 ln n``
            rounded up to a multiple of the parallel environments (so no
            worker idles); a given size is kept, and a round then stops at the
            end of a generation.
        sigma0: Initial step size, in action units (the box is [0, 1]).
        learn_from: ``applied`` (the clipped policy) or ``proposal`` (see the module docs).
    """

    popsize: int | None = None
    sigma0: float = 0.1
    learn_from: str = "proposal"


@register_agent("cmaes")
class CMAESAgent(PolicySearchAgent):
    """CMA-ES from ``cma``, ask/tell in rounds of ``num_envs``. Options: :class:`CMAESOptions`.

    Deterministic for a seed: ``cma`` draws its normal samples from the
    agent's own generator (no global seeding).
    """

    Options: ClassVar[type] = CMAESOptions

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(envs, episodes=episodes, seed=seed, **options)
        o = self.options
        check_learn_from(self.name, o.learn_from)
        if o.popsize is not None and o.popsize < 2:
            raise AdcError(f"option popsize={o.popsize} for agent 'cmaes' must be at least 2")
        if not 0 < o.sigma0 <= 1:
            raise AdcError(f"option sigma0={o.sigma0} for agent 'cmaes' must be in (0, 1] (actions lie in [0, 1])")
        n = self.num_units
        popsize = o.popsize or -(-(4 + int(3 * math.log(n))) // self.num_envs) * self.num_envs
        self.rng = np.random.default_rng(self.seed)
        self.generations = Generations(cma_strategy(envs.uniform_actions(), o.sigma0, popsize, self.rng))
        self.es = self.generations.es
        self.es.inject([self.es.mean.copy()], force=True)  # the first proposal is the uniform policy itself

    def _room(self) -> int:
        return self.generations.room()

    def _ask(self) -> np.ndarray:
        return self.generations.ask()

    def _tell(self, proposal: np.ndarray, applied: np.ndarray, reward: float) -> None:
        self.generations.tell(proposal if self.options.learn_from == "proposal" else applied, reward)

    def _describe(self) -> dict[str, Any]:
        return {"generation": int(self.es.countiter), "sigma": float(self.es.sigma)}
