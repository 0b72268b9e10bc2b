"""A search's resumable state on disk: the agent and the history, swapped in as one folder.

A checkpoint is only ever written at the end of a round (every episode of
the round finished, the agent trained on them), so a resumed search
continues exactly as the uninterrupted one would have. The new state is
written beside the old one and renamed into place, so a crash while saving
leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from adc.agents import Agent, load_agent
from adc.envs.vec_env import PruningVecEnv
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write_text, describe_os_error

STATE_DIR = "state"
AGENT_DIR = "agent"
HISTORY_FILE = "history.json"
SETTINGS_FILE = "settings.json"


class Checkpoint:
    """The checkpoint folder of one search (``<run folder>/checkpoint``).

    Args:
        folder: Where it lives; created on the first save.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def state(self) -> Path:
        return self.folder / STATE_DIR

    def exists(self) -> bool:
        """Whether a complete state was saved."""
        return (self.state / HISTORY_FILE).is_file()

    def save(self, agent: Agent, history: list[dict[str, Any]], settings: dict[str, Any]) -> None:
        """Write the agent, the history and the settings, replacing the previous state whole.

        Raises:
            AdcError: when the folder cannot be written (one line with the reason).
        """
        tmp = self.folder / f".{STATE_DIR}-{os.getpid()}.new"
        old = self.folder / f".{STATE_DIR}-{os.getpid()}.old"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            agent.save(tmp / AGENT_DIR)
            atomic_write_text(tmp / HISTORY_FILE, json.dumps(history))
            atomic_write_text(tmp / SETTINGS_FILE, json.dumps(settings, default=str))
            if self.state.exists():
                os.replace(self.state, old)
            os.replace(tmp, self.state)
            shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise AdcError(f"cannot write the checkpoint in {str(self.folder)!r}: {describe_os_error(exc)}") from exc

    def history(self) -> list[dict[str, Any]]:
        """The saved history.

        Raises:
            AdcError: when there is no complete checkpoint.
        """
        if not self.exists():
            raise AdcError(f"nothing to resume in {str(self.folder.parent)!r}: no {self.folder.name}/{STATE_DIR}/{HISTORY_FILE}")
        return json.loads((self.state / HISTORY_FILE).read_text())

    def settings(self) -> dict[str, Any]:
        """The settings the checkpointed search ran with."""
        path = self.state / SETTINGS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def agent(self, envs: PruningVecEnv) -> Agent:
        """The saved agent, on ``envs``."""
        return load_agent(self.state / AGENT_DIR, envs)
