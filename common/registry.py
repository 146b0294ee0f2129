"""One small registry for what users swap by name (attackers today; heads, encoders, strategies
and tasks can move onto it): register under a name, get by name with a clear error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from common.errors import LatentveilError

T = TypeVar("T")


class RegistryError(LatentveilError, ValueError):
    """An unknown or duplicate name in a registry."""


class Registry(Generic[T]):
    """Named entries of one kind: `@REG.register("name")` adds, `REG.get("name")` returns."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object under `name` (a duplicate is an error)."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise RegistryError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The entry registered as `name`; an unknown name lists the known ones."""
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise RegistryError(f"unknown {self.kind} '{name}'; registered: {known}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
