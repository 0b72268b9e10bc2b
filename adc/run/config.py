"""The settings of a search run: what the flags, a ``config.toml`` and a run folder all become.

:class:`RunConfig` is the model, the checkpoint, the data and the
TensorBoard switch, plus the search's :class:`~adc.engine.options.SearchOptions`.
Its TOML form is flat (one key per flag) and holds no output folder, so
``adc search --config runs/X/config.toml --seed 1`` reruns a search into a
new folder. Paths inside it (checkpoint, plug-in files, data folders, energy model, cache)
are stored absolute, so a config, ``adc finetune``, ``adc export`` and
``adc.load`` work from any folder. A value of the wrong type in a config
file gets the same one-line error as the flag would.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adc.engine.options import SearchOptions, check_type, flag
from adc.inputs.data import absolute_data_spec
from adc.inputs.pretrained import DEFAULT_DATA, DEFAULT_MODEL
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write_text
from adc.utils.plugins import is_plugin_spec

RUN_FIELDS = ("model", "checkpoint", "data", "tensorboard", "iterations", "iteration_finetune")
ALIASES = {"warmup": "agent_options.warmup"}
"""Flat keys that are a shorthand for another setting."""


def absolute_spec(spec: str | None) -> str | None:
    """A ``path/to/file.py:fn`` plug-in spec with an absolute path; anything else unchanged."""
    if not spec or not is_plugin_spec(spec):
        return spec
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return spec


def absolute_path(path: str | None) -> str | None:
    """A file path made absolute (None stays None)."""
    return None if path is None else str(Path(path).expanduser().resolve())


def _agent_options(value: Any) -> dict[str, Any]:
    """``["noise_sigma=0.3", ...]`` (flags, TOML) or a mapping -> a dict of options."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, (list, tuple)):
        raise AdcError(f"--agent-option {value!r}: expected KEY=VALUE entries such as noise_sigma=0.3")
    values: dict[str, Any] = {}
    for item in value:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip() or not text.strip():
            raise AdcError(f"--agent-option {item!r}: expected KEY=VALUE, such as noise_sigma=0.3")
        values[key.strip()] = text.strip()
    return values


@dataclass
class RunConfig:
    """Every setting of one ``adc search`` run.

    Attributes:
        model: Model spec (``zoo:NAME``, ``torchvision:NAME``, ``file.py:fn``, ``package.module:fn``).
        checkpoint: State dict of the trained model.
        data: Data spec.
        tensorboard: Log episodes to TensorBoard in the run folder.
        iterations: Search and prune in this many steps toward the budget (:mod:`adc.run.iterative`).
        iteration_finetune: Fine-tuning epochs between those steps (0: none).
        search: The search's options.
    """

    model: str = DEFAULT_MODEL
    checkpoint: str | None = None
    data: str = DEFAULT_DATA
    tensorboard: bool = False
    iterations: int = 1
    iteration_finetune: int = 0
    search: SearchOptions = field(default_factory=SearchOptions)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(RunConfig)
        for name in RUN_FIELDS:
            check_type(name, getattr(self, name), hints[name])
        if self.iterations < 1:
            raise AdcError(f"--iterations {self.iterations}: must be a positive integer (1: one search, no steps)")
        if self.iteration_finetune < 0:
            raise AdcError(f"--iteration-finetune {self.iteration_finetune}: must be >= 0 epochs")
        if self.iteration_finetune and self.iterations < 2:
            raise AdcError(f"--iteration-finetune {self.iteration_finetune}: fine-tunes between steps, so it needs "
                           "--iterations 2 or more (fine-tune a single search with adc finetune)")
        self.model = absolute_spec(self.model) or self.model
        self.data = absolute_data_spec(absolute_spec(self.data) or self.data)
        self.checkpoint = absolute_path(self.checkpoint)
        if self.search.reconstruct is None:  # a run always has training images: reconstruction is on
            self.search.reconstruct = True
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise AdcError(f"--checkpoint {self.checkpoint!r}: file does not exist")

    @classmethod
    def from_values(cls, values: Mapping[str, Any], where: str = "settings") -> RunConfig:
        """Build from flat settings (a config file's, or flags), checking every key and type.

        Raises:
            AdcError: naming an unknown key (and the valid ones) or a value of the wrong type.
        """
        search_fields = {f.name for f in dataclasses.fields(SearchOptions) if f.init}
        valid = sorted({*RUN_FIELDS, *search_fields, *ALIASES})
        run: dict[str, Any] = {}
        search: dict[str, Any] = {}
        warmup = None
        for key, value in values.items():
            if key in RUN_FIELDS:
                run[key] = value
            elif key == "warmup":
                warmup = value
            elif key in search_fields:
                search[key] = value
            else:
                raise AdcError(f"{where}: unknown setting {key!r}; valid: {', '.join(valid)}")
        if "agent_options" in search:
            search["agent_options"] = _agent_options(search["agent_options"])
        if warmup is not None:
            check_type("warmup", warmup, int)
            search.setdefault("agent_options", {})["warmup"] = warmup
        for key in ("reward",):
            if isinstance(search.get(key), str):
                search[key] = absolute_spec(search[key])
        for key in ("energy_model", "cache_dir"):
            if isinstance(search.get(key), str):
                search[key] = absolute_path(search[key])
        return cls(**run, search=SearchOptions(**search))

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """Read a ``config.toml`` (or a run folder's)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.toml"
        where = f"config {str(path)!r}"
        try:
            return cls.from_values(read_toml(path), where=where)
        except AdcError as exc:
            if str(exc).startswith(where) or str(exc).startswith("config file"):
                raise
            raise AdcError(f"{where}: {exc}") from exc

    def values(self) -> dict[str, Any]:
        """Flat settings, as a config file holds them (None values left out)."""
        out = {name: getattr(self, name) for name in RUN_FIELDS}
        out.update(self.search.fields())
        return {k: v for k, v in out.items() if v is not None}

    def with_values(self, values: Mapping[str, Any], where: str = "flags") -> RunConfig:
        """This config with some settings replaced (flags on top of a config file)."""
        merged = self.values()
        if "warmup" in values or "agent_options" in values:
            merged["agent_options"] = dict(merged.get("agent_options", {}))
        merged.update({k: v for k, v in values.items() if k != "agent_options"})
        if "agent_options" in values:
            merged["agent_options"].update(_agent_options(values["agent_options"]))
        return RunConfig.from_values(merged, where=where)

    def changed(self, other: RunConfig) -> list[str]:
        """The settings (as flags) whose values differ in ``other``."""
        mine, theirs = _plain(self.values()), _plain(other.values())
        return [flag(k) for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(values), default=str))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _option_text(value: Any) -> str:
    """An agent option as ``--agent-option KEY=VALUE`` takes it: 64,64 for a tuple, true / false for a bool."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def write_toml(path: Path, values: Mapping[str, Any]) -> Path:
    """Write flat settings (None values left out) as TOML; mappings as lists of ``KEY=VALUE``."""
    lines = ["# adc search settings; rerun with: adc search --config THIS_FILE"]
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            value = [f"{k}={_option_text(v)}" for k, v in value.items()]
        lines.append(f"{key} = {_toml_value(value)}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a config written by :func:`write_toml` (a run folder means its ``config.toml``).

    Raises:
        AdcError: if the file is missing or is not valid TOML.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.toml"
    if not path.is_file():
        raise AdcError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AdcError(f"config file {str(path)!r} is not valid TOML: {' '.join(str(exc).split())}") from exc
