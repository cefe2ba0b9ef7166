"""``fault.*`` run-config section: fault injection for drills and tests (off by default).

What each mode does is :mod:`fedpeft.faults`; this is only the keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .flat import ConfigError, check, key


def _modes() -> tuple[str, ...]:
    from fedpeft.faults import MODES

    return MODES


# Modes that take a number (``4:scale=10``): fedpeft.faults.corrupt's factor / value.
NUMBERED = ("scale", "sign-flip", "fill")


@dataclass(frozen=True)
class FaultConfig:
    """``fault.*``: ``modes`` is ``"<partition>:<mode>,..."``, e.g. ``"0:nan,3:raise"``."""

    modes: str = key("", "\"<partition>:<mode>,...\", e.g. \"0:nan,3:raise,4:scale=10\": "
                     "those clients misbehave every round they are sampled (scale, sign-flip "
                     "and fill take =<number>, else fault.scale)")  # fmt: skip
    dropout: float = key(0.0, "probability that a sampled client fails (seeded)")
    dropout_mode: str = key("raise", "`raise` in training, or `sleep` fault.sleep seconds "
                            "(a straggler)")  # fmt: skip
    scale: float = key(100.0, "factor of the scale / sign-flip attacks and value of fill, "
                       "where fault.modes gives none")  # fmt: skip
    sleep: float = key(0.0, "seconds a `sleep` client / straggler stalls before training")
    server_crash_round: int = key(0, "the ServerApp's process SIGKILLs itself in this "
                                  "round once its replies are aggregated, before the "
                                  "round's evaluation and checkpoint (a crash drill; "
                                  "0: never)")  # fmt: skip

    def __post_init__(self) -> None:
        check(0 <= self.dropout < 1, "fault.dropout", self.dropout, "must be in [0, 1)")
        check(
            self.dropout_mode in ("raise", "sleep"),
            "fault.dropout-mode",
            self.dropout_mode,
            "valid choices: ['raise', 'sleep']",
        )
        check(self.sleep >= 0, "fault.sleep", self.sleep, "must be >= 0")
        check(self.server_crash_round >= 0, "fault.server-crash-round",
              self.server_crash_round, "must be >= 0 (0: never)")  # fmt: skip
        stalls = (self.dropout > 0 and self.dropout_mode == "sleep") or "sleep" in (
            self.by_partition().values()
        )
        check(not stalls or self.sleep > 0, "fault.sleep", self.sleep,
              "a 'sleep' fault (fault.modes or fault.dropout-mode) needs fault.sleep > 0: "
              "set it past server.round-timeout to make a straggler")  # fmt: skip
        self.by_partition()  # validates

    def by_partition(self) -> dict[int, str]:
        """Partition id → fault mode."""
        return {pid: mode for pid, (mode, _) in self._entries().items()}

    def factor(self, partition_id: int) -> float:
        """The number of ``partition_id``'s ``scale`` / ``sign-flip`` / ``fill`` attack."""
        value = self._entries().get(partition_id, ("", None))[1]
        return self.scale if value is None else value

    def _entries(self) -> dict[int, tuple[str, float | None]]:
        out: dict[int, tuple[str, float | None]] = {}
        for item in filter(None, (s.strip() for s in self.modes.split(","))):
            pid, _, spec = item.partition(":")
            mode, has_value, number = spec.partition("=")
            value = None
            if has_value:
                try:
                    value = float(number)
                except ValueError:
                    value = None
                if mode not in NUMBERED or value is None or not math.isfinite(value):
                    raise ConfigError(f"fault.modes={self.modes!r}: bad entry {item!r}; only "
                                      f"{list(NUMBERED)} take '=<finite number>'")  # fmt: skip
            if not pid.strip().isdigit() or mode not in _modes():
                raise ConfigError(
                    f"fault.modes={self.modes!r}: bad entry {item!r}; expected "
                    f"'<partition id>:<mode>' with mode one of {list(_modes())}"
                )
            out[int(pid)] = (mode, value)
        return out
