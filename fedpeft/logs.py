"""Route the project's loggers through Flower's handler (server and client apps)."""

from __future__ import annotations

import logging
import os

# Flower's own knob (flwr.supercore.logger reads it for its console handler): the same
# variable sets this project's level, so FLWR_LOG_LEVEL=DEBUG shows both sides' DEBUG.
LEVEL_ENV = "FLWR_LOG_LEVEL"


def setup_logging(level: int | None = None) -> None:
    """Route this project's ``logging`` records through Flower's log handler.

    ``level`` defaults to ``$FLWR_LOG_LEVEL`` (a level name), else INFO.
    """
    from flwr.common.logger import FLOWER_LOGGER

    if level is None:
        name = os.environ.get(LEVEL_ENV, "INFO").upper()
        level = logging.getLevelNamesMapping().get(name, logging.INFO)
    for name in ("fedpeft", "server_app", "client_app", "peft_strategies"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers:
            for handler in FLOWER_LOGGER.handlers:
                logger.addHandler(handler)
            logger.propagate = False
