"""What the CLI draws: one console, progress bars, and tables that stay whole when output is piped."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Piped output (adc profile > file) is not a terminal; rich would cut tables and bars to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 400, soft_wrap=not sys.stdout.isatty())


def progress_bar(label: str) -> Progress:
    """A progress bar: label, bar, done/total, a free-text column (``info``), elapsed and remaining time."""
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


class LazyBar:
    """One progress bar, drawn at its first update: an input refused before any work leaves no bar behind.

    Args:
        label: The bar's label.
        total: Steps in all (episodes).
    """

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total = label, total
        self._bar: Progress | None = None
        self._task: Any = None

    def update(self, **fields: Any) -> None:
        """``completed=``, ``info=``: as ``Progress.update``; the first call draws the bar."""
        if self._bar is None:
            self._bar = progress_bar(self.label)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, info="")
        self._bar.update(self._task, **fields)

    def print(self, text: str) -> None:
        """A line above the bar (or on the console before the bar is drawn)."""
        (self._bar.console if self._bar is not None else console).print(text, highlight=False)

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextlib.contextmanager
def table_progress(label: str = "latency table") -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar; yields a ``(done, total, layer)`` callback for latency-table builds."""
    with progress_bar(label) as bar:
        task = bar.add_task(label, total=None, info="")

        def update(done: int, total: int, layer: str) -> None:
            bar.update(task, completed=done, total=total, info=layer)

        yield update


@contextlib.contextmanager
def no_progress() -> Iterator[None]:
    yield None


def warn(text: str) -> None:
    """A note for the user, in yellow."""
    console.print(f"[yellow]note: {text}", highlight=False)


def print_table(table: Any) -> None:
    console.print(table)
