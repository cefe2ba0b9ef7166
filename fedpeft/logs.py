"""Route the project's loggers through Flower's handler (server and client apps)."""

from __future__ import annotations

import logging


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
