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
