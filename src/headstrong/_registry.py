"""One registry of named things, used for formats, fault models, RA estimators and backbones.

Entries are filed by a decorator (``@REGISTRY.register("name")``), read like a mapping in
registration order, and looked up with ``get``, whose error lists the names there are. A name
is filed once: a second entry under it is refused, so one plug-in cannot silently replace another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind (``what``: "format", "fault model", ...), in registration order."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """File ``entry`` under ``name``; a name already filed is refused."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that files what it decorates under ``name``."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:  # type: ignore[override]  (a lookup that fails loudly)
        """The entry called ``name``; a ValueError naming every registered name if there is none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.what} {name!r}; expected one of {', '.join(self._entries)}") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
