"""Per-process parse of Flower's run config (shared by server and client apps)."""

from __future__ import annotations

import functools
import logging
from typing import Any

from .config import RunConfig, parse_run_config


@functools.lru_cache(maxsize=8)
def _parse(items: tuple[tuple[str, Any], ...]) -> RunConfig:
    return parse_run_config(dict(items))


def run_config(raw: Any) -> RunConfig:
    """Parse ``context.run_config`` once per process and run config."""
    return _parse(tuple(sorted(dict(raw).items())))


def setup_logging(level: int = logging.INFO) -> None:
    """Route this project's ``logging`` records through Flower's log handler."""
    from flwr.common.logger import FLOWER_LOGGER

    for name in ("fedpeft", "server_app", "client_app", "peft_strategies"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers:
            for handler in FLOWER_LOGGER.handlers:
                logger.addHandler(handler)
            logger.propagate = False
