"""Whole-policy black-box search: the ask/tell loop shared by CMA-ES and TPE, and its exact, pickle-free resume.

A black-box optimizer proposes whole policies (one action in [0, 1] per unit);
the environments clip each onto the budget and score it; the optimizer is
told the reward. Proposals come in rounds of ``num_envs`` (scored in parallel
when the search has workers); an optimizer that must hear a batch before it
can propose more (a CMA-ES generation) says so with :meth:`PolicySearchAgent._room`,
and a round then stops at the batch's end.

Resume without pickle: the agent records every round (each episode's
proposal, applied actions and reward) in its JSON state. Loading rebuilds the
optimizer from the seed and replays the rounds -- the same asks, then the
same tells, without evaluating anything -- so its internal state (random
generator included) is exactly what it was. Each replayed proposal is checked
against the recorded one; a mismatch (another version of the optimizer
library) is refused rather than resumed silently different.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from adc.agents.base import Agent, OnEpisode, OnRound
from adc.envs import contract
from adc.envs.vec_env import PruningVecEnv
from adc.utils.errors import AdcError

LEARN_FROM = ("applied", "proposal")
"""What the optimizer is told a reward belongs to: the clipped policy that was played, or the raw proposal."""


def check_learn_from(agent: str, value: str) -> str:
    """``value`` if it is one of :data:`LEARN_FROM`.

    Raises:
        AdcError: naming the option and the valid choices.
    """
    if value not in LEARN_FROM:
        raise AdcError(f"option learn_from={value!r} for agent {agent!r}; valid: {', '.join(LEARN_FROM)}")
    return value


class PolicySearchAgent(Agent):
    """Base of agents that propose whole policies and learn from their rewards (see the module docs).

    A subclass builds its optimizer in ``__init__`` (from ``seed`` and the
    options only, so that replaying rebuilds it) and implements :meth:`_ask`
    and :meth:`_tell`; :meth:`_room` when it needs to hear results before
    proposing more. ``explore=False`` changes nothing: there is no separate
    noise-free policy.
    """

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        super().__init__(envs, episodes=episodes, seed=seed, **options)
        self.rounds: list[list[dict[str, Any]]] = []

    # -- what a subclass implements --------------------------------------------------------

    @abstractmethod
    def _ask(self) -> np.ndarray:
        """The next proposal: one action per unit, in [0, 1]."""

    @abstractmethod
    def _tell(self, proposal: np.ndarray, applied: np.ndarray, reward: float) -> None:
        """Learn that ``proposal``, played as ``applied`` (clipped onto the budget), earned ``reward``."""

    def _room(self) -> int:
        """How many proposals may be asked before some must be told (default: as many as wanted)."""
        return self.num_envs

    def _describe(self) -> dict[str, Any]:
        """The optimizer's state worth reporting with an episode (``info["agent"]``)."""
        return {}

    # -- the loop --------------------------------------------------------------------------

    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True, on_round: OnRound | None = None) -> None:
        played, going = 0, True
        while going and played < episodes:
            size = min(self.num_envs, episodes - played, self._room())
            proposals = [np.asarray(self._ask(), dtype=np.float64) for _ in range(size)]
            labels = [{"phase": "explore", **self._describe()} for _ in range(size)]
            entries: list[dict[str, Any]] = []
            answers: list[bool] = []

            def seen(info: dict[str, Any]) -> bool:
                j = len(entries)
                applied = np.asarray(info[contract.ACTIONS], dtype=np.float64)
                reward = float(info[contract.REWARD])
                entries.append({"proposal": proposals[j].tolist(), "actions": applied.tolist(), "reward": reward})
                self._tell(proposals[j], applied, reward)  # before on_round: a checkpoint there must hold it
                if len(entries) == size:  # only whole rounds: the replay repeats a round's asks before its tells
                    self.rounds.append(entries)
                answers.append(on_episode(info))
                return answers[-1]

            def round_end() -> bool:
                answers.append(True if on_round is None else on_round())
                return answers[-1]

            played += self._play_rounds(size, lambda k: proposals[k].tolist(), seen, lambda k: labels[k], round_end)
            going = all(answers)

    # -- persistence -----------------------------------------------------------------------

    def _state(self, path: Path) -> dict[str, Any]:
        return {"rounds": self.rounds}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        for entries in state["rounds"]:
            proposals = [np.asarray(self._ask(), dtype=np.float64) for _ in entries]
            for proposal, entry in zip(proposals, entries):
                if not np.array_equal(proposal, np.asarray(entry["proposal"], dtype=np.float64)):
                    raise AdcError(f"cannot resume the {self.name!r} agent in {path}: replaying its recorded rounds "
                                   "drew different policies (was its optimizer library upgraded?); start a new search")
            for proposal, entry in zip(proposals, entries):
                self._tell(proposal, np.asarray(entry["actions"], dtype=np.float64), float(entry["reward"]))
        self.rounds = [list(entries) for entries in state["rounds"]]
