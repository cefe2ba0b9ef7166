"""A name → implementation registry that refuses duplicates.

Every choice a run-config key offers (aggregation rules, data sources, built-in
datasets, partitioners) is the set of names registered here by the module that
implements them, so adding one is one registration and the config's validation,
error messages and docs/CONFIG.md table follow. PEFT methods have their own registry
(:mod:`peft_strategies.registry`), which holds method instances by class name and
keeps that package free of this one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Implementations of one kind of choice by name, in registration order.

    Parameters
    ----------
    what : str
        What a name names, for error messages ("aggregation rule").

    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object as ``name``."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` as ``name``; a name registered twice raises ``ValueError``."""
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str, key: str = "") -> T:
        """The implementation of ``name``; the error names ``key``, the value and the choices."""
        try:
            return self._items[name]
        except KeyError:
            where = f"{key}={name!r}: " if key else f"{name!r}: "
            raise ValueError(f"{where}unknown {self.what}; choose one of {self.names()}") from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
