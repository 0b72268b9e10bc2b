"""A small name -> object registry, shared by models, data, criteria, agents,
rewards and budgets.

Modelled on torchvision's ``register_model``: a duplicate name raises
ValueError, and looking up an unknown name lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from adc.utils.errors import AdcError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually builders or callables).

    Args:
        kind: What the registry holds, used in error messages ("criterion").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is None."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises:
            AdcError: if the name is unknown; the message lists the valid names.
        """
        try:
            return self._items[name]
        except KeyError:
            raise AdcError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
