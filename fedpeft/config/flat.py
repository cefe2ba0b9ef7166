"""Flat ``a.b-c`` run-config keys ↔ fields of frozen dataclasses.

A field declares its key's default, its one-line ``help`` and, where the value
names an implementation, the registry it must be in (:func:`key`), the way
peft's configs carry ``metadata={"help": ...}``. The parser, the start-up
validation, the defaults test and the docs/CONFIG.md table all read those declarations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

from ..protocol import is_int, is_number

T = TypeVar("T")


class ConfigError(ValueError):
    """A run-config key or value is invalid; the message names the key."""


def key(
    default: Any, help: str, choices: Callable[[], Any] | None = None, only_if: str = ""
) -> Any:
    """A config field: its default, its meaning and (optionally) its registry of choices.

    ``choices`` is called when the value is checked, so the registry it returns is
    imported only then and lists whatever its module registered. With ``only_if``
    (e.g. ``"data.source = 'builtin'"``) the choices apply only then: the section's
    ``__post_init__`` checks them, :func:`check_choices` skips the field.
    """
    meta = {"help": help, "choices": choices, "only_if": only_if}
    return dataclasses.field(default=default, metadata=meta)


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
        if not is_int(value):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    if typ is float:
        if not is_number(value):
            raise ConfigError(f"{key}={value!r}: expected a number")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return value
    raise TypeError(f"unsupported config field type {typ!r} for {key}")


def _scalars(cls: type) -> list[dataclasses.Field]:
    hints = get_type_hints(cls)
    return [f for f in dataclasses.fields(cls) if hints[f.name] in (bool, int, float, str)]


def from_flat(cls: type[T], prefix: str, flat: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from the keys of ``flat`` that start with ``prefix``.

    Only scalar fields are read; missing keys keep the dataclass default.
    Unknown keys under ``prefix`` are left for the caller to reject.
    """
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in _scalars(cls):
        key_ = field_key(prefix, field.name)
        if key_ in flat:
            kwargs[field.name] = _coerce(key_, flat[key_], hints[field.name])
    return cls(**kwargs)


def check(cond: bool, key: str, value: Any, why: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` and ``value`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}={value!r}: {why}")


def _choice_names(choices: Callable[[], Any]) -> tuple[list[str], str]:
    """(names, what they name) of a ``Registry`` or a ``(what, names)`` pair."""
    found = choices()
    if isinstance(found, tuple):
        what, names = found
        return list(names), what
    return list(found), str(found.what)


def check_choices(obj: Any, prefix: str) -> None:
    """Check every field of ``obj`` that declares ``choices`` against its registry."""
    for field in dataclasses.fields(obj):
        choices = field.metadata.get("choices")
        if choices is not None and not field.metadata.get("only_if"):
            value = getattr(obj, field.name)
            names, what = _choice_names(choices)
            check(value in names, field_key(prefix, field.name), value,
                  f"unknown {what}; choose one of {names}")  # fmt: skip


@dataclass(frozen=True)
class KeyDoc:
    """One run-config key as declared: what the docs/CONFIG.md table and the defaults test read."""

    key: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    only_if: str = ""  # the choices apply only then


def describe(cls: type, prefix: str) -> list[KeyDoc]:
    """The declared keys of dataclass ``cls`` under ``prefix``, in field order."""
    docs = []
    for field in _scalars(cls):
        choices = field.metadata.get("choices")
        docs.append(KeyDoc(
            key=field_key(prefix, field.name),
            default=field.default,
            help=field.metadata.get("help", ""),
            choices=tuple(_choice_names(choices)[0]) if choices else (),
            only_if=field.metadata.get("only_if", ""),
        ))  # fmt: skip
    return docs
