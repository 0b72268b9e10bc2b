"""Every setting of a search, typed and validated once.

:class:`SearchOptions` is what the CLI flags, a ``config.toml`` and the
Python API all become. Its fields are checked when it is built -- types,
ranges, registry names, the budget (parsed into
:class:`~adc.objective.budgets.BudgetSpec` here, once), the agent's own
options, the device, the energy model -- so a bad value fails in one line
before any work, whichever door it came through.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adc.agents import AGENTS, REFINE_METHODS, parse_options
from adc.analysis.alignment import check_round_to_setting
from adc.analysis.energy import EnergyModel, load_energy_model
from adc.analysis.timers import RUNTIMES
from adc.objective.budgets import BudgetSpec, parse_budget
from adc.objective.rewards import NEEDS_LATENCY, Reward, get_reward
# DATA_CRITERIA: the criteria the search collects calibration batches for (once per search, never per
# episode); LABEL_CRITERIA: those that need labelled batches. Each criterion declares it when it registers.
from adc.pruning.criteria import CRITERIA, DATA_CRITERIA, LABEL_CRITERIA  # noqa: F401  (read by the search)
from adc.utils.device import check_device
from adc.utils.errors import AdcError


def flag(name: str) -> str:
    """The command-line flag of a field: ``round_to`` -> ``--round-to``."""
    return "--" + name.replace("_", "-")


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(hint) in (list, tuple):
        return "a list"
    if typing.get_origin(hint) in (dict, Mapping):
        return "a table of KEY = VALUE"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_type(name: str, value: Any, hint: Any) -> None:
    """Refuse, in one line naming the field's flag, a value that is not of the field's declared type."""
    if _is_instance(value, hint):
        return
    raise AdcError(f"{flag(name)} {value!r}: must be {_type_name(hint)}")


def _is_instance(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_is_instance(value, a) for a in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        item = (typing.get_args(hint) or (Any,))[0]
        return isinstance(value, (list, tuple)) and all(_is_instance(v, item) for v in value)
    if origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if origin is not None and isinstance(origin, type):
        return isinstance(value, origin)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _budget_specs(budget: Any) -> tuple[BudgetSpec, ...]:
    if isinstance(budget, (str, BudgetSpec)):
        budget = [budget]
    if isinstance(budget, Mapping):
        budget = [f"{k}={v}" for k, v in budget.items()]
    if not isinstance(budget, (list, tuple)) or not budget:
        raise AdcError(f"--budget {budget!r}: give at least one KEY=VALUE such as flops=0.5")
    return tuple(b if isinstance(b, BudgetSpec) else parse_budget(str(b)) for b in budget)


DEFAULT_VAL_SIZE = 1000
"""Validation images of the reward when ``val_size`` is not given."""
DEFAULT_SELECT_SIZE = 5000
"""Held-out validation images of the final selection when ``select_size`` is not given."""

_RAY_ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.\-]+:\d{1,5})$")


@dataclass
class SearchOptions:
    """Every setting of one search (see the README for each flag).

    Attributes:
        budget: ``["flops=0.5", "params=1.5M"]`` or ``{"flops": 0.5}``; parsed into :attr:`budgets`. One budget
            may be a range of fractions, ``latency=0.3:0.9[:STEP]``: the search then hands back a front of models
            (:attr:`front`, :mod:`adc.engine.front`).
        agent: Name in :data:`adc.agents.AGENTS`.
        episodes: Episodes in all (a learning agent plays its noise-free policy for a tenth, then refines the best
            policy for the last three tenths).
        criterion: Channel criterion (:data:`adc.pruning.criteria.CRITERIA`).
        reward: Reward name, ``file.py:fn`` / ``package.module:fn``, or a callable.
        seed: Seeds everything random; the same seed gives the same search on the CPU.
        round_to: Kept channel counts are multiples of this, or ``"auto"``: a short measured probe on the
            search's runtime, device and batch picks the multiple (1, 4, 8, 16, 32) that runs fastest per MAC
            (:mod:`adc.analysis.alignment`).
        min_keep: Smallest kept fraction of any unit.
        bn_calibration: Training images for batch-norm recalibration (0: off).
        val_size: Validation images the reward is computed on (None: :data:`DEFAULT_VAL_SIZE`, or all the
            validation split has when it has fewer; a number given is noted when the split is short of it).
        calibration_size: Training images for data-driven criteria and reconstruction.
        select_top: Best distinct policies re-scored on held-out images at the end (0 or 1: off).
        select_size: Held-out validation images of that final selection (None: up to :data:`DEFAULT_SELECT_SIZE`
            of those the reward leaves; a search on a small split skips the selection quietly unless this is given).
        reconstruct: Least-squares reconstruction (None: on when training images are given).
        fill_budget: Make every policy use its budget.
        observe_bounds: Tell a learning agent, at every unit, the action interval the budget clipping allows
            (:data:`adc.envs.pruning_env.BOUND_FEATURES`).
        exploit_episodes, refine_episodes: A learning agent's last phases (None: a tenth, and three tenths).
        refine_method: How the refinement searches around the best policy: ``cmaes`` (CMA-ES from the best
            policy, the default) or ``gaussian`` (hill-climbing with shrinking steps) (:mod:`adc.agents.refine`).
        device: ``cpu`` or ``cuda[:N]``.
        agent_options: The agent's own settings (``{"warmup": 20}``), checked against its options.
        checkpoint_every: Episodes between checkpoints.
        latency: Record predicted latency every episode even without a latency budget or reward.
        runtime: Latency runtime, ``torch`` or ``onnxruntime``.
        latency_batch: Batch size of the latency timings.
        threads: Torch CPU threads (per worker).
        cache_dir: Latency table cache folder (default ``$ADC_CACHE_DIR/latency``).
        energy_model: An :class:`EnergyModel` or a TOML file overriding its costs.
        workers: Candidate policies evaluated at the same time (more than 1 needs Ray).
        ray_address: Join this Ray cluster (``auto``, ``host:port``, ``ray://host:port``) instead of a local one.
        eval_batch_size: Images per forward pass when evaluating (raise it on a GPU).
        gpus_per_worker: GPU share of each worker (default ``1 / workers`` on CUDA).
    """

    budget: Any = ("flops=0.5",)
    agent: str = "ddpg"
    episodes: int = 100
    criterion: str = "l1"
    reward: str | Callable[..., Any] = "acc"
    seed: int = 0
    round_to: int | str = "auto"
    min_keep: float = 0.2
    bn_calibration: int = 512
    val_size: int | None = None
    calibration_size: int = 256
    select_top: int = 8
    select_size: int | None = None
    reconstruct: bool | None = None
    fill_budget: bool = True
    observe_bounds: bool = False
    exploit_episodes: int | None = None
    refine_episodes: int | None = None
    refine_method: str = "cmaes"
    device: str = "cpu"
    agent_options: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 10
    latency: bool = False
    runtime: str = "torch"
    latency_batch: int = 1
    threads: int = 1
    cache_dir: str | None = None
    energy_model: Any = None
    workers: int = 1
    ray_address: str | None = None
    eval_batch_size: int = 128
    gpus_per_worker: float | None = None

    budgets: tuple[BudgetSpec, ...] = field(init=False, repr=False)
    agent_settings: Any = field(init=False, repr=False)
    energy: EnergyModel = field(init=False, repr=False)
    reward_fn: Reward = field(init=False, repr=False)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(SearchOptions)
        for f in dataclasses.fields(self):
            if f.init and f.name not in ("budget", "energy_model", "reward", "round_to"):
                check_type(f.name, getattr(self, f.name), hints[f.name])
        self.budgets = _budget_specs(self.budget)
        self.round_to = check_round_to_setting(self.round_to)
        self._check_ranges()
        AGENTS.get(self.agent)
        self.agent_options = dict(self.agent_options)
        self.agent_settings = parse_options(self.agent, AGENTS.get(self.agent).Options, self.agent_options)
        # The typed values (2, not "2"): a setting reads the same from a flag, a config file or the API.
        self.agent_options = {k: getattr(self.agent_settings, k) for k in self.agent_options}
        CRITERIA.get(self.criterion)
        if self.refine_method not in REFINE_METHODS:
            raise AdcError(f"refine_method {self.refine_method!r}: valid: {', '.join(REFINE_METHODS)}")
        if not (isinstance(self.reward, str) or callable(self.reward)):
            raise AdcError(f"--reward {self.reward!r}: must be a reward name, file.py:fn, package.module:fn or a function")
        self.reward_fn = get_reward(self.reward)
        check_device(self.device)
        if self.runtime not in RUNTIMES:
            raise AdcError(f"--runtime {self.runtime!r}: valid: {', '.join(RUNTIMES)}")
        if isinstance(self.energy_model, EnergyModel) or self.energy_model is None or isinstance(self.energy_model, str):
            self.energy = load_energy_model(self.energy_model)
        else:
            raise AdcError(f"--energy-model {self.energy_model!r}: must be a TOML file or an EnergyModel")
        self._check_front()
        if self.ray_address is not None and not _RAY_ADDRESS.match(self.ray_address):
            raise AdcError(f"--ray-address {self.ray_address!r}: expected auto, local, HOST:PORT or ray://HOST:PORT")

    def _check_ranges(self) -> None:
        positive = ("episodes", "threads", "latency_batch", "workers", "checkpoint_every", "eval_batch_size",
                    "val_size")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise AdcError(f"{flag(name)} {getattr(self, name)}: must be a positive integer")
        for name in ("bn_calibration", "calibration_size", "select_top", "select_size"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise AdcError(f"{flag(name)} {getattr(self, name)}: must be >= 0")
        for name in ("exploit_episodes", "refine_episodes"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise AdcError(f"{flag(name)} {getattr(self, name)}: must be >= 0")
        if not (math.isfinite(self.min_keep) and 0 < self.min_keep <= 1):
            raise AdcError(f"--min-keep {self.min_keep}: must be in (0, 1]")
        if self.bn_calibration == 1:
            raise AdcError("--bn-calibration 1: batch-norm recalibration needs at least 2 images (0 turns it off)")
        if self.gpus_per_worker is not None and not 0 < self.gpus_per_worker <= 8:
            raise AdcError(f"--gpus-per-worker {self.gpus_per_worker}: must be in (0, 8]")

    def _check_front(self) -> None:
        ranges = [b for b in self.budgets if b.is_range]
        if len(ranges) > 1:
            raise AdcError(f"--budget {ranges[1]}: only one budget may be a range (a front of models); "
                           f"{ranges[0]} already is")
        if ranges and self.episodes < len(ranges[0].points()):
            raise AdcError(f"--episodes {self.episodes}: the front {ranges[0]} has {len(ranges[0].points())} points; "
                           "give at least one episode per point")

    @property
    def front(self) -> BudgetSpec | None:
        """The budget given as a range (``latency=0.3:0.9``): the search then hands back one model per point."""
        return next((b for b in self.budgets if b.is_range), None)

    def budgets_at(self, point: BudgetSpec | None) -> tuple[BudgetSpec, ...]:
        """The budgets with the range replaced by one of its points (all of them unchanged when there is no range)."""
        return tuple(point if b.is_range and point is not None else b for b in self.budgets)

    @property
    def reward_images(self) -> int:
        """The validation images the reward asks for (``val_size``, or its default)."""
        return DEFAULT_VAL_SIZE if self.val_size is None else self.val_size

    @property
    def holdout_images(self) -> int:
        """The held-out images the final selection asks for (``select_size``, or its default)."""
        return DEFAULT_SELECT_SIZE if self.select_size is None else self.select_size

    @property
    def needs_latency_table(self) -> bool:
        """A latency budget, a latency reward, or ``latency=True`` asks for a measured table."""
        return (self.latency or any(b.key == "latency" for b in self.budgets)
                or (isinstance(self.reward, str) and self.reward in NEEDS_LATENCY))

    @property
    def needs_calibration(self) -> bool:
        """Whether the search needs training images: BN recalibration, reconstruction or a data criterion."""
        return self.bn_calibration > 0 or bool(self.reconstruct) or self.criterion in DATA_CRITERIA

    def fields(self) -> dict[str, Any]:
        """The settings as given (for config files and reports): budgets as text, no derived fields."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        out["budget"] = [str(b) for b in self.budgets]
        if isinstance(self.energy_model, EnergyModel):
            out["energy_model"] = None
        if callable(self.reward):
            out["reward"] = getattr(self.reward, "__name__", "function")
        return out
