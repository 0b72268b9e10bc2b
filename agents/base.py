"""The agent interface shared by the RL agents and the baselines, and their registry.

An agent plays episodes of a pruning environment (one step per prunable unit,
one episode = one complete policy) and reports each finished episode to the
caller; the caller (``adc.search``) keeps the best policy, logs and
checkpoints. Agents are built by name::

    agent = make_agent("ddpg", env, episodes=400, seed=0, warmup=50)
    agent.run(400, on_episode)          # on_episode(final_info) -> bool, False stops
    agent.save(run_dir / "agent")       # resume later with load_agent(path, env)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from adc.errors import AdcError
from adc.registry import Registry

OnEpisode = Callable[[dict[str, Any]], bool]
"""Called with the environment's final ``info`` after every episode; returning False stops ``run``."""

AGENTS: Registry[type[Agent]] = Registry("agent")

STATE_FILE = "agent.json"


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """This agent takes no options."""


class Agent(ABC):
    """Base class of every search agent.

    Args:
        env: The pruning environment (the ``PruningEnv`` contract: one step per
            unit, ``info["applied_action"]`` every step, the reward and
            ``info["episode_reward"]`` at the final step).
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

    def __init__(self, env: gym.Env, *, episodes: int, seed: int = 0, **options: Any) -> None:
        if episodes < 1:
            raise AdcError(f"episodes={episodes}: the search needs at least 1 episode")
        self.env = env
        self.episodes = int(episodes)
        self.seed = int(seed)
        self.options = parse_options(self.name, self.Options, options)
        self.episodes_done = 0

    @property
    def num_units(self) -> int:
        return int(self.env.unwrapped.num_units)

    @abstractmethod
    def run(self, episodes: int, on_episode: OnEpisode, *, explore: bool = True) -> None:
        """Play up to ``episodes`` more episodes, calling ``on_episode(final_info)`` after each.

        Stops early when ``on_episode`` returns False. With ``explore=False`` a
        learning agent plays its noise-free policy (the exploitation episodes
        that cash in what it learned at the end of a search).
        """

    def predict(self, observation: np.ndarray) -> float:
        """The agent's noise-free action for one observation."""
        raise NotImplementedError(f"agent {self.name!r} has no observation-dependent policy")

    def exploit_actions(self) -> list[float] | None:
        """A fixed policy (actions per unit) worth replaying, or None.

        Learning agents return None: their policy depends on the observations,
        so play it with ``run(k, on_episode, explore=False)`` instead.
        """
        return None

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
        (path / STATE_FILE).write_text(json.dumps(record, indent=1))

    @classmethod
    def load(cls, path: Path, env: gym.Env) -> Agent:
        """Resume an agent saved with :meth:`save`, on the environment ``env``."""
        record = _read_record(Path(path))
        if record["agent"] != cls.name:
            raise AdcError(f"{path} holds a {record['agent']!r} agent, not {cls.name!r}; use agents.load_agent")
        agent = cls(env, episodes=record["episodes"], seed=record["seed"], **record["options"])
        agent.episodes_done = int(record["episodes_done"])
        agent._restore(record["state"], Path(path))
        return agent

    def _state(self, path: Path) -> dict[str, Any]:
        """Agent-specific resumable state (JSON); may also write files into ``path``."""
        return {}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        """Inverse of :meth:`_state`."""

    # -- helpers for agents that play fixed action lists -------------------------------

    def _play(self, choose: Callable[[int], float]) -> dict[str, Any]:
        """Play one episode with ``choose(unit_index)`` as the action; return the final info."""
        self.env.reset(seed=self.seed if self.episodes_done == 0 else None)
        for unit in range(self.num_units):
            _, _, terminated, truncated, info = self.env.step(np.array([choose(unit)], dtype=np.float32))
            if terminated or truncated:
                break
        if not terminated:
            raise RuntimeError(f"the environment did not terminate after {self.num_units} steps (num_units)")
        self.episodes_done += 1
        return dict(info)


def register_agent(name: str) -> Callable[[type[Agent]], type[Agent]]:
    """Class decorator: register an :class:`Agent` subclass under ``name``."""

    def add(cls: type[Agent]) -> type[Agent]:
        cls.name = name
        AGENTS.register(name, cls)
        return cls

    return add


def make_agent(name: str, env: gym.Env, *, episodes: int, seed: int = 0, **options: Any) -> Agent:
    """Build the agent registered as ``name`` (``AGENTS.names()`` lists them)."""
    return AGENTS.get(name)(env, episodes=episodes, seed=seed, **options)


def load_agent(path: Path, env: gym.Env) -> Agent:
    """Resume whichever agent was saved in the folder ``path``."""
    return AGENTS.get(_read_record(Path(path))["agent"]).load(path, env)


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


def fixed_actions(actions: Sequence[float]) -> Callable[[int], float]:
    """A ``choose`` for :meth:`Agent._play` that plays a fixed action list."""
    return lambda unit: float(actions[unit])
