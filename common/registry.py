"""One small registry for what users swap by name (tasks, encoders, strategies, attackers):
register under a name, get by name with a clear error."""

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
            # The same definition registering again (its module reloaded) is fine; another one
            # would silently replace an entry other code relies on.
            known = self._entries.get(name)
            if known is not None and _qualified(known) != _qualified(entry):
                raise RegistryError(
                    f"{self.kind} '{name}' is already registered ({_qualified(known)})"
                )
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The entry registered as `name`; an unknown name lists the known ones."""
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise RegistryError(f"unknown {self.kind} '{name}'; registered: {known}")
        return self._entries[name]

    def copy(self) -> Registry[T]:
        """A registry of the same kind holding the same entries (tests register into one)."""
        other: Registry[T] = Registry(self.kind)
        other._entries = dict(self._entries)
        return other

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)


def _qualified(entry: object) -> str:
    """Where an entry is defined: module and qualified name (of its class for instances)."""
    target = entry if hasattr(entry, "__qualname__") else type(entry)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
