"""A run config as ``metrics.json`` records it (``dataclasses.asdict``) → :class:`RunConfig`.

The record is turned back into flat run-config keys and parsed by
:func:`~fedpeft.config.parse.parse_run_config`, so it is validated exactly as the run's
own config was. A key added since the run was made takes its default (by this
project's rule, the old behaviour); a key the schema does not know is refused,
naming it.
"""

from __future__ import annotations

from typing import Any

from .flat import ConfigError, field_key
from .parse import parse_run_config
from .schema import RunConfig


def _flat_section(prefix: str, section: Any, where: str) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise ConfigError(f"recorded config {where!r}: expected a table, got {section!r}")
    return {field_key(prefix, name): value for name, value in section.items()}


def recorded_flat(config: dict[str, Any]) -> dict[str, Any]:
    """The flat run-config keys of a recorded (``dataclasses.asdict``) :class:`RunConfig`.

    ``peft.params`` holds the selected method's keys (``peft.<method>.*``) and
    ``peft.head`` the head's (``peft.head.*``).
    """
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if name != "peft" and isinstance(value, dict):
            flat.update(_flat_section(f"{name}.", value, name))
        elif name != "peft":
            flat[name] = value
    peft = config.get("peft", {})
    method = peft.get("method") if isinstance(peft, dict) else None
    if not isinstance(method, str):
        raise ConfigError(f"recorded config 'peft': no method in {peft!r}")
    flat["peft.method"] = method
    for part, prefix in (("params", f"peft.{method}."), ("head", "peft.head.")):
        if peft.get(part) is not None:
            flat.update(_flat_section(prefix, peft[part], f"peft.{part}"))
    return flat


def config_from_record(config: dict[str, Any]) -> RunConfig:
    """Rebuild the :class:`RunConfig` a run recorded in ``metrics.json`` (``config``).

    Raises
    ------
    ConfigError
        If the record holds a key the schema does not know or an invalid value.

    """
    return parse_run_config(recorded_flat(config))
