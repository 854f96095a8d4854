"""Registries: every kind (layer type, activation, loss, optimizer, initializer) is declared once,
in one table built from the entries themselves; one `get` resolves a name or says which exist.

Engines key their builders by the same names in a `Registry` of their own, so an engine that
meets a kind it has no builder for raises `UnknownKind`, never a fall-through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownKind(LookupError):
    """A name that a registry does not hold."""

    def __init__(self, kind: str, name: object, names: Iterable[str]) -> None:
        self.kind, self.name, self.names = kind, name, tuple(names)
        super().__init__(f"unknown {kind} {name!r}; one of {', '.join(self.names)}")

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Entries of one kind by name, in declaration order."""

    def __init__(
        self,
        kind: str,
        entries: Iterable[T] | Mapping[str, T],
        name: Callable[[T], str] | None = None,
    ) -> None:
        self.kind = kind
        if isinstance(entries, Mapping):
            self._items = dict(entries)
        else:
            if name is None:
                raise TypeError("name the key of each entry")
            self._items = {}
            for entry in entries:
                key = name(entry)
                if key in self._items:
                    raise ValueError(f"{kind} {key!r} is declared twice")
                self._items[key] = entry

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownKind(self.kind, name, self._items) from None

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
