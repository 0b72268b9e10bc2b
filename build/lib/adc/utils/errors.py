"""User-facing errors.

Every mistake a user can make (an unknown name, a bad file, an unreachable
budget) raises :class:`AdcError` with a one-line message that names the input
and says the fix. The CLI turns it into exit code 2 without a traceback.
"""

from __future__ import annotations


class AdcError(ValueError):
    """A bad user input; the message is one line and names the input."""
