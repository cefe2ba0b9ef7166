"""Turn flat ``a.b-c`` run-config keys into validated frozen dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A run-config key or value is invalid; the message names the key."""


def field_key(prefix: str, name: str) -> str:
    """Return the run-config key of a dataclass field.

    ``__`` opens a sub-namespace and ``_`` becomes ``-``:
    ``dirichlet__min_partition_size`` → ``<prefix>dirichlet.min-partition-size``.
    """
    return prefix + ".".join(part.replace("_", "-") for part in name.split("__"))


def _coerce(key: str, value: Any, typ: Any) -> Any:
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}={value!r}: expected a number")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return value
    raise TypeError(f"unsupported config field type {typ!r} for {key}")


def from_flat(cls: type[T], prefix: str, flat: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from the keys of ``flat`` that start with ``prefix``.

    Only scalar fields are read; missing keys keep the dataclass default.
    Unknown keys under ``prefix`` are left for the caller to reject.
    """
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = field_key(prefix, field.name)
        if key in flat:
            kwargs[field.name] = _coerce(key, flat[key], hints[field.name])
    return cls(**kwargs)


def known_keys(cls: type, prefix: str) -> set[str]:
    """Return the flat keys that dataclass ``cls`` reads under ``prefix``."""
    return {field_key(prefix, f.name) for f in dataclasses.fields(cls)}


def check(cond: bool, key: str, value: Any, why: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` and ``value`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}={value!r}: {why}")
