"""Fault injection for fault-tolerance tests and drills (``fault.*``; off by default).

A client whose partition id is listed in ``fault.modes`` misbehaves in that way
every round it is sampled; ``fault.dropout`` makes any sampled client fail with
that probability — raise (``fault.dropout-mode = "raise"``) or stall for
``fault.sleep`` seconds, past the round timeout (``"sleep"``) — seeded by
(seed, round, partition) so a run is reproducible and a test can predict who
drops. Nothing here runs unless configured.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np

from .flatconfig import ConfigError, check

Arrays = dict[str, np.ndarray]

MODES = (
    "raise", "sleep", "nan", "inf", "missing-key", "extra-key", "shape", "dtype", "oversize",
    "no-num-examples", "zero-num-examples", "float-num-examples", "huge-num-examples",
    "scale", "sign-flip",
)  # fmt: skip


class InjectedFaultError(RuntimeError):
    """Raised by a client that was told to fail."""


@dataclass(frozen=True)
class FaultConfig:
    """``fault.*``: ``modes`` is ``"<partition>:<mode>,..."``, e.g. ``"0:nan,3:raise"``."""

    modes: str = ""
    dropout: float = 0.0
    dropout_mode: str = "raise"
    scale: float = 100.0
    sleep: float = 0.0

    def __post_init__(self) -> None:
        check(0 <= self.dropout < 1, "fault.dropout", self.dropout, "must be in [0, 1)")
        check(
            self.dropout_mode in ("raise", "sleep"),
            "fault.dropout-mode",
            self.dropout_mode,
            "valid choices: ['raise', 'sleep']",
        )
        check(self.sleep >= 0, "fault.sleep", self.sleep, "must be >= 0")
        stalls = (self.dropout > 0 and self.dropout_mode == "sleep") or "sleep" in (
            self.by_partition().values()
        )
        check(not stalls or self.sleep > 0, "fault.sleep", self.sleep,
              "a 'sleep' fault (fault.modes or fault.dropout-mode) needs fault.sleep > 0: "
              "set it past server.round-timeout to make a straggler")  # fmt: skip
        self.by_partition()  # validates

    def by_partition(self) -> dict[int, str]:
        """Partition id → fault mode."""
        out: dict[int, str] = {}
        for item in filter(None, (s.strip() for s in self.modes.split(","))):
            pid, _, mode = item.partition(":")
            if not pid.strip().isdigit() or mode not in MODES:
                raise ConfigError(
                    f"fault.modes={self.modes!r}: bad entry {item!r}; expected "
                    f"'<partition id>:<mode>' with mode one of {list(MODES)}"
                )
            out[int(pid)] = mode
        return out


def drops_out(cfg: FaultConfig, seed: int, server_round: int, partition_id: int) -> bool:
    """Whether this client fails this round (seeded, so tests can predict it)."""
    if cfg.dropout <= 0:
        return False
    return random.Random(f"{seed}/{server_round}/{partition_id}").random() < cfg.dropout


def corrupt(mode: str, arrays: Arrays, sent: Arrays, scale: float) -> Arrays:
    """The arrays a client in ``mode`` sends instead of its honest ``arrays``."""
    out = dict(arrays)
    key = next(iter(out))
    if mode == "nan":
        out[key] = np.full_like(out[key], np.nan)
    elif mode == "inf":
        out[key] = np.full_like(out[key], np.inf)
    elif mode == "missing-key":
        del out[key]
    elif mode == "extra-key":
        out["blocks.0.attn.qkv.weight"] = np.zeros((3, 3), dtype=np.float32)
    elif mode == "shape":
        out[key] = np.zeros((*out[key].shape, 2), dtype=out[key].dtype)
    elif mode == "dtype":
        out[key] = out[key].astype(np.float64)
    elif mode == "oversize":
        out["padding"] = np.zeros(4 * 1024 * 1024 // 4, dtype=np.float32)
    elif mode in ("scale", "sign-flip"):
        factor = scale if mode == "scale" else -scale
        out = {k: (sent[k] + factor * (v - sent[k])).astype(v.dtype) for k, v in out.items()}
    return out


def num_examples(mode: str, honest: int) -> int | float | None:
    """The ``num-examples`` a client in ``mode`` reports (None: leave it out)."""
    return {
        "no-num-examples": None,
        "zero-num-examples": 0,
        "float-num-examples": float(honest) + 0.5,
        "huge-num-examples": 10**12,
    }.get(mode, honest)


def before_training(cfg: FaultConfig, seed: int, server_round: int, partition_id: int) -> str:
    """Fail, stall or pass; return this client's fault mode ("" when honest)."""
    mode = cfg.by_partition().get(partition_id, "")
    if mode == "raise":
        raise InjectedFaultError(f"fault.modes: partition {partition_id} raises in training")
    if drops_out(cfg, seed, server_round, partition_id):
        if cfg.dropout_mode == "sleep":  # a straggler: replies after fault.sleep seconds
            time.sleep(cfg.sleep)
            return mode
        raise InjectedFaultError(
            f"fault.dropout={cfg.dropout}: partition {partition_id} drops out in round "
            f"{server_round}"
        )
    if mode == "sleep":
        time.sleep(cfg.sleep)
    return mode
