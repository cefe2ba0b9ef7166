"""The exception a SecAgg+ protocol violation raises, on either side."""

from __future__ import annotations


class SecAggError(ValueError):
    """A SecAgg+ message, share or state that breaks the protocol; names the node."""
