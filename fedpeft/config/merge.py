"""Merge several ``--run-config`` arguments into one, key by key.

``flwr run`` accepts ``--run-config`` more than once, but flwr 1.42's
``parse_config_args`` merges the parsed TOML tables shallowly: a second
argument that sets any ``server.*`` key replaces *every* ``server.*`` key
of the first. With dotted namespaces (``peft.lora.r``) that silently drops
settings, so the launchers merge the arguments themselves (later keys win,
per flat key; a ``.toml`` argument is a preset file) and pass one string.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from flwr.common.config import flatten_dict, get_project_config, parse_config_args


def literal(value: Any) -> str:
    """``value`` as a TOML literal, as ``--run-config`` takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"run-config value {value!r} is not a bool, int, float or string")


# flwr's own pattern for one ``key=value`` pair (flwr.common.config.parse_config_args).
# It skips any text between pairs without a word, so ``"server.lr = 0.1"`` (spaces around
# ``=``) would be dropped silently; ``_check_pairs`` refuses such text instead.
PAIR = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")


def _check_pairs(item: str) -> None:
    leftover = PAIR.sub(" ", item).split()
    if leftover:
        raise ValueError(f"--run-config {item!r}: {' '.join(leftover)!r} is not a key=value "
                         "pair (write key=value without spaces around '=')")  # fmt: skip


def merge_overrides(items: list[str]) -> dict[str, Any]:
    """Flat key → value of all ``items`` in order; later items win per key.

    Raises
    ------
    ValueError
        If an item holds text that is not a ``key=value`` pair (flwr would skip it).

    """
    merged: dict[str, Any] = {}
    for item in items:
        if item.strip():
            if not item.strip().endswith(".toml"):
                _check_pairs(item)
            merged.update(parse_config_args([item]))
    return merged


def app_config(root: Path, items: list[str]) -> dict[str, Any]:
    """The flat run config ``flwr run <root>`` gets: pyproject defaults, then ``items``."""
    flat = flatten_dict(get_project_config(root)["tool"]["flwr"]["app"]["config"])
    flat.update(merge_overrides(items))
    return flat


def to_arg(overrides: dict[str, Any]) -> str:
    """One ``--run-config`` string that ``flwr run`` parses back to ``overrides``."""
    return " ".join(f"{key}={literal(value)}" for key, value in overrides.items())
