"""A small typed registry, so that methods, tasks and suites are looked up by name, not if/elif."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, with a did-you-mean error for unknown names."""

    def __init__(self, kind: str, plugins: str | None = None) -> None:
        """`plugins`: an entry-point group whose entries (name = object) other packages add on
        first use, so a method or task can be installed without forking."""
        self.kind = kind
        self._own: dict[str, T] = {}
        self._plugins = plugins
        self._loaded: dict[str, T] | None = None if plugins else self._own

    @property
    def _entries(self) -> dict[str, T]:
        if self._loaded is None:
            self._loaded = {**self._own, **load_plugins(self._plugins or "", self.kind, self._own)}
        return self._loaded

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        if name in self._own:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._own[name] = entry
        if self._loaded is not None:
            self._loaded[name] = entry

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


def load_plugins(group: str, kind: str, own: dict[str, object]) -> dict[str, object]:
    """The entry points of `group` (name -> object), loaded. A plugin that fails to import, or that
    reuses a built-in name, is an error naming the distribution: silently running without it would
    give a run other methods than its user asked for."""
    from importlib.metadata import entry_points

    found: dict[str, object] = {}
    for point in entry_points(group=group):
        where = f"{point.dist.name if point.dist else '?'} ({point.value})"
        if point.name in own:
            raise HarnessError(f"the {kind} '{point.name}' of plugin {where} is already built in")
        try:
            found[point.name] = point.load()
        except Exception as exc:  # an installed but broken package: say which
            raise HarnessError(f"cannot load {kind} '{point.name}' from plugin {where}: {exc}") from exc
    return found
