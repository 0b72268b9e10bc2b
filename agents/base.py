"""The agent interface shared by the RL agents and the baselines, and their registry.

An agent plays episodes of a pruning task (one step per prunable unit, one
episode = one complete policy) on a :class:`~adc.envs.vec_env.PruningVecEnv`
of N environments, so it advances in rounds of N episodes whose policies are
scored together (in parallel when the search has workers). It reports each
finished episode to the caller, which keeps the best policy, logs and
checkpoints. Agents are built by name::

    agent = make_agent("ddpg", envs, episodes=400, seed=0, warmup=50)
    agent.run(400, on_episode)          # on_episode(final_info) -> bool, False stops after the round
    agent.save(run_dir / "agent")       # resume later with load_agent(path, envs)

Agents use the environments only through the vector API and the
:class:`~adc.envs.contract.PruningTask` questions the vector environment answers.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adc.envs import contract
from adc.envs.vec_env import PruningVecEnv
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write_text
from adc.utils.registry import Registry

OnEpisode = Callable[[dict[str, Any]], bool]
"""Called with the environment's final ``info`` after every episode; returning False stops ``run`` after the round."""
OnRound = Callable[[], bool]
"""Called after every round (its episodes reported, the agent updated); returning False stops ``run``."""

AGENTS: Registry[type[Agent]] = Registry("agent")

STATE_FILE = "agent.json"


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """This agent takes no options."""


class Agent(ABC):
    """Base class of every search agent.

    Args:
        envs: The environments (``envs.num_envs`` episodes a round; the contract of
            :mod:`adc.envs.contract`: ``info["applied_action"]`` every step, the
            reward in ``info["reward"]`` at the final step).
        episodes: The planned number of episodes; schedules (warm-up, noise
            decay) and the baselines' evaluation budget are sized to it.
        seed: Seeds every random choice of the agent.
        **options: Agent-specific settings, the fields of ``Options``.

    Raises:
        AdcError: on an option the agent does not know (the message lists the valid ones).
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    can_exploit: ClassVar[bool] = False
    """Whether ``run(..., explore=False)`` plays something different from exploring (a learned policy)."""
    one_policy: ClassVar[bool] = False
    """Whether the agent plays a single episode in all, whatever ``episodes`` asks (a deterministic strategy)."""
    probes: ClassVar[bool] = False
    """Whether, before that episode, it spends up to ``episodes`` evaluations on probes (``evaluate_actions``)."""

    def __init__(self, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> None:
        if episodes < 1:
            raise AdcError(f"episodes={episodes}: the search needs at least 1 episode")
        self.envs = envs
        self.episodes = int(episodes)
        self.seed = int(seed)
        self.options = parse_options(self.name, self.Options, options)
        self.episodes_done = 0

    @property
    def num_units(self) -> int:
        return int(self.envs.num_units)

    @property
    def num_envs(self) -> int:
        """Episodes a round."""
        return int(self.envs.num_envs)

    @abstractmethod
    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True, on_round: OnRound | None = None) -> None:
        """Play up to ``episodes`` more episodes, calling ``on_episode(final_info)`` after each.

        Episodes come in rounds of ``num_envs``; after each round ``on_round()``
        is called. Stops at the end of a round when ``on_episode`` or
        ``on_round`` returned False. With ``explore=False`` a learning agent
        plays its noise-free policy (the exploitation episodes that cash in what
        it learned at the end of a search).
        """

    def predict(self, observation: np.ndarray) -> float:
        """The agent's noise-free action for one observation."""
        raise NotImplementedError(f"agent {self.name!r} has no observation-dependent policy")

    # -- persistence -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write everything needed to resume into the folder ``path`` (created if missing)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        record = {
            "agent": self.name,
            "episodes": self.episodes,
            "seed": self.seed,
            "options": dataclasses.asdict(self.options),
            "episodes_done": self.episodes_done,
            "state": self._state(path),
        }
        atomic_write_text(path / STATE_FILE, json.dumps(record, indent=1))

    @classmethod
    def load(cls, path: Path, envs: PruningVecEnv) -> Agent:
        """Resume an agent saved with :meth:`save`, on the environments ``envs``."""
        record = _read_record(Path(path))
        if record["agent"] != cls.name:
            raise AdcError(f"{path} holds a {record['agent']!r} agent, not {cls.name!r}; use adc.agents.load_agent")
        agent = cls(envs, episodes=record["episodes"], seed=record["seed"], **record["options"])
        agent.episodes_done = int(record["episodes_done"])
        agent._restore(record["state"], Path(path))
        return agent

    def _state(self, path: Path) -> dict[str, Any]:
        """Agent-specific resumable state (JSON); may also write files into ``path``."""
        return {}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        """Inverse of :meth:`_state`."""

    # -- helpers for agents that play whole policies -------------------------------------

    def _play_rounds(self, episodes: int, propose: Callable[[int], list[float]], on_episode: OnEpisode,
                     label: Callable[[int], dict[str, Any]], on_round: OnRound | None = None) -> int:
        """Play ``episodes`` episodes in rounds of up to ``num_envs``; return how many were played.

        ``propose(k)`` gives the actions of the ``k``-th episode of this call
        (proposals of one round are drawn in order before it is played);
        ``label(k)`` its ``info["agent"]`` entry. Stops at the end of a round
        in which ``on_episode`` or ``on_round`` returned False.
        """
        played = 0
        while played < episodes:
            size = min(self.num_envs, episodes - played)
            proposals = [propose(played + j) for j in range(size)]
            infos = self.envs.play(proposals)
            keep_going = True
            for j, info in enumerate(infos):
                self.episodes_done += 1
                info[contract.AGENT] = {**label(played + j), **info.get(contract.AGENT, {})}
                keep_going = on_episode(info) and keep_going
            played += size
            if on_round is not None:
                keep_going = on_round() and keep_going
            if not keep_going:
                break
        return played


def register_agent(name: str) -> Callable[[type[Agent]], type[Agent]]:
    """Class decorator: register an :class:`Agent` subclass under ``name``."""

    def add(cls: type[Agent]) -> type[Agent]:
        cls.name = name
        AGENTS.register(name, cls)
        return cls

    return add


def make_agent(name: str, envs: PruningVecEnv, *, episodes: int, seed: int = 0, **options: Any) -> Agent:
    """Build the agent registered as ``name`` (``AGENTS.names()`` lists them)."""
    return AGENTS.get(name)(envs, episodes=episodes, seed=seed, **options)


def load_agent(path: Path, envs: PruningVecEnv) -> Agent:
    """Resume whichever agent was saved in the folder ``path``."""
    return AGENTS.get(_read_record(Path(path))["agent"]).load(path, envs)


def parse_options(agent: str, options_class: type, options: dict[str, Any]) -> Any:
    """Build ``options_class`` from keyword options, converting strings from the command line.

    Raises:
        AdcError: naming an unknown option and the valid ones, or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(options_class)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "none"
        raise AdcError(f"unknown option {unknown[0]!r} for agent {agent!r}; valid: {valid}")
    hints = typing.get_type_hints(options_class)
    values = {key: _coerce(agent, key, value, hints[key]) for key, value in options.items()}
    return options_class(**values)


def _coerce(agent: str, key: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` (often a string from the command line) to the field type ``hint``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None and type(None) in typing.get_args(hint):
        return None
    kind = args[0] if typing.get_origin(hint) in (types.UnionType, typing.Union) else hint
    try:
        if kind is bool:
            text = str(value).lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return text in ("true", "1", "yes")
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            items = value.split(",") if isinstance(value, str) else value
            return tuple(_coerce(agent, key, v, item) for v in items)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):  # AdcError is a ValueError: a bad tuple item lands here too
        name = getattr(kind, "__name__", str(kind))
        if typing.get_origin(kind) is tuple:
            name = f"comma-separated {typing.get_args(kind)[0].__name__}s (such as 64,64)"
        raise AdcError(f"option {key}={value!r} for agent {agent!r} must be of type {name}") from None


def _read_record(path: Path) -> dict[str, Any]:
    file = path / STATE_FILE
    if not file.is_file():
        raise AdcError(f"no saved agent in {path}: {STATE_FILE} is missing; pass the folder given to Agent.save")
    return json.loads(file.read_text())
