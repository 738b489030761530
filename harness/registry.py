"""A small typed registry, so that methods, tasks and suites are looked up by name, not if/elif."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, with a did-you-mean error for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise HarnessError(unknown_name_message(self.kind, name, self._entries)) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def unknown_name_message(kind: str, name: str, known: object) -> str:
    """One line naming the unknown value, the closest known one, and the choices."""
    names = sorted(str(k) for k in known)  # type: ignore[attr-defined]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"unknown {kind} '{name}'{hint} (known: {shown})"
