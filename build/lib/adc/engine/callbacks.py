"""Callbacks on the search loop, as in stable-baselines3: progress, checkpoints, TensorBoard, notes.

A :class:`SearchCallback` is told when the search starts, after every
episode (with the episode's history record and the best record so far),
after every round (all of its episodes finished and the agent updated: the
only moment the state can be checkpointed exactly), when the search has
something to tell the user (a note), and when it ends. Returning False from
:meth:`SearchCallback.on_episode` or :meth:`SearchCallback.on_round` stops
the search at the end of the round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from adc.agents import Agent
from adc.engine.checkpoint import Checkpoint
from adc.engine.result import SearchResult
from adc.utils.errors import AdcError

Record = dict[str, Any]


class Search(Protocol):
    """What a callback sees of the running search (:class:`adc.engine.loop.Search`)."""

    history: list[Record]
    agent: Agent | None

    def checkpoint_settings(self) -> dict[str, Any]:
        """The settings a checkpoint records."""


class SearchCallback:
    """Base class: every hook does nothing."""

    def on_search_start(self, search: Search) -> None:
        """The search is built and about to play its first (or, resumed, its next) episode."""

    def on_episode(self, record: Record, best: Record) -> bool:
        """After every episode; False stops the search at the end of the round."""
        return True

    def on_round(self, search: Search) -> bool:
        """After every round; False stops the search."""
        return True

    def on_note(self, text: str) -> None:
        """Something the user should know (printed by the CLI, listed in the report)."""

    def on_search_end(self, result: SearchResult) -> None:
        """The search has its result (also after an interruption or a failure)."""


class CallbackList(SearchCallback):
    """Several callbacks, called in order."""

    def __init__(self, callbacks: Iterable[SearchCallback]) -> None:
        self.callbacks = list(callbacks)

    def on_search_start(self, search: Search) -> None:
        for c in self.callbacks:
            c.on_search_start(search)

    def on_episode(self, record: Record, best: Record) -> bool:
        return all([c.on_episode(record, best) for c in self.callbacks])

    def on_round(self, search: Search) -> bool:
        return all([c.on_round(search) for c in self.callbacks])

    def on_note(self, text: str) -> None:
        for c in self.callbacks:
            c.on_note(text)

    def on_search_end(self, result: SearchResult) -> None:
        for c in self.callbacks:
            c.on_search_end(result)


class ProgressCallback(SearchCallback):
    """Calls ``progress(record, best)`` after every episode (and ``notes(text)`` for notes, when given)."""

    def __init__(self, progress: Callable[[Record, Record], None] | None,
                 notes: Callable[[str], None] | None = None) -> None:
        self.progress, self.notes = progress, notes

    def on_episode(self, record: Record, best: Record) -> bool:
        if self.progress is not None:
            self.progress(record, best)
        return True

    def on_note(self, text: str) -> None:
        if self.notes is not None:
            self.notes(text)


class CheckpointCallback(SearchCallback):
    """Saves the agent and the history at the first round end after every ``every`` episodes, and at the end.

    Args:
        checkpoint: Where.
        every: Episodes between checkpoints.
    """

    def __init__(self, checkpoint: Checkpoint, every: int = 10) -> None:
        self.checkpoint, self.every = checkpoint, every
        self._saved_at = 0

    def on_search_start(self, search: Search) -> None:
        self._saved_at = len(search.history)

    def on_round(self, search: Search) -> bool:
        if len(search.history) // self.every > self._saved_at // self.every:
            self.save(search)
        return True

    def save(self, search: Search) -> None:
        """Save now (the search is at a round end)."""
        if search.agent is None or not search.history:
            return
        self.checkpoint.save(search.agent, search.history, search.checkpoint_settings())
        self._saved_at = len(search.history)


class TensorBoardCallback(SearchCallback):
    """Logs every episode's reward, best reward, accuracy and cost ratios to TensorBoard in ``log_dir``."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # heavy, optional: only when asked for
        except ImportError:
            raise AdcError("--tensorboard needs the tensorboard package: pip install 'adc[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_episode(self, record: Record, best: Record) -> bool:
        step = record["episode"]
        self.writer.add_scalar("reward/episode", record["reward"], step)
        self.writer.add_scalar("reward/best", best["reward"], step)
        for key in ("top1", "flops_ratio", "params_ratio"):
            if key in record["metrics"]:
                self.writer.add_scalar(f"metrics/{key}", record["metrics"][key], step)
        return True

    def on_search_end(self, result: SearchResult) -> None:
        self.writer.close()
