"""The project's loggers: Flower's handlers once each, at the level FLWR_LOG_LEVEL names."""

from __future__ import annotations

import logging

from flwr.common.logger import FLOWER_LOGGER

from fedpeft.logs import setup_logging

NAMES = ("fedpeft", "server_app", "client_app", "peft_strategies")


def test_flwr_log_level_sets_ours_and_repeated_setup_adds_no_handler(monkeypatch):
    # Prepare: a ClientApp process handles many messages, each calling setup_logging
    monkeypatch.setenv("FLWR_LOG_LEVEL", "debug")
    # Execute
    setup_logging()
    setup_logging()
    # Assert: each record goes to each of Flower's handlers once, and DEBUG is on
    for name in NAMES:
        logger = logging.getLogger(name)
        assert logger.level == logging.DEBUG
        assert logger.handlers == FLOWER_LOGGER.handlers and not logger.propagate


def test_without_flwr_log_level_it_is_info(monkeypatch):
    monkeypatch.delenv("FLWR_LOG_LEVEL", raising=False)
    setup_logging()
    assert all(logging.getLogger(n).level == logging.INFO for n in NAMES)
