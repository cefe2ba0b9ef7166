"""The failed-rounds step: count consecutive failed rounds, stop the run after too many."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord

STATE_KEY = "failed_streak"


class RoundsFailedError(RuntimeError):
    """Too many consecutive rounds without enough valid replies."""


class FailedRounds:
    """Counts consecutive rounds that aggregated nothing (``server.max-failed-rounds``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streak = 0

    def __call__(self, aggregated: ArrayRecord | None) -> None:
        """Count a round: failed if it aggregated nothing."""
        self.streak = 0 if aggregated is not None else self.streak + 1

    def stop(self, failure: str) -> None:
        """Raise :class:`RoundsFailedError` once the streak reaches the limit.

        ``failure`` is why the last round failed.
        """
        if self.streak >= self.limit:
            raise RoundsFailedError(
                f"{self.streak} consecutive failed rounds (server.max-failed-rounds="
                f"{self.limit}); last: {failure}"
            )

    def state(self) -> dict[str, Any]:
        """The streak, for the checkpoint."""
        return {STATE_KEY: self.streak}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.streak = int(state.get(STATE_KEY, 0))
