"""One registry of PEFT methods by name; duplicates are rejected."""

from __future__ import annotations

from .base import PeftMethod

_REGISTRY: dict[str, PeftMethod] = {}


def register(cls: type[PeftMethod]) -> type[PeftMethod]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    name = cls.name
    if name in _REGISTRY:
        raise ValueError(f"PEFT method {name!r} is already registered")
    _REGISTRY[name] = cls()
    return cls


def get_method(name: str) -> PeftMethod:
    """Return the method registered as ``name``; the error lists valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"peft.method={name!r}: unknown PEFT method; choose one of {method_names()}"
        ) from None


def method_names() -> list[str]:
    """Names of all registered methods, in registration order."""
    return list(_REGISTRY)
