"""Ctrl-C during a search: the first stops it at the end of the current round, a second stops it at once.

Stopping at a round end keeps the checkpoint exact: a search resumed after
Ctrl-C continues as the uninterrupted one would have (same seed, same
policies). A second Ctrl-C raises ``KeyboardInterrupt`` where the search is;
the best result so far is still written, but the checkpoint stays at the last
round end it was saved at.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any


class DeferredInterrupt:
    """A context that turns the first SIGINT into a request (``requested``); only in the main thread.

    Args:
        notify: Called once, with a one-line message, when the first Ctrl-C arrives.
    """

    def __init__(self, notify: Callable[[str], None] | None = None) -> None:
        self.notify = notify
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.notify is not None:
            self.notify("Ctrl-C: stopping after the current round (the checkpoint stays exact); Ctrl-C again stops now")

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
