"""Fault injection for fault-tolerance tests and drills (``fault.*``; off by default).

A client whose partition id is listed in ``fault.modes`` misbehaves in that way
every round it is sampled; ``fault.dropout`` makes any sampled client fail with
that probability — raise (``fault.dropout-mode = "raise"``) or stall for
``fault.sleep`` seconds, past the round timeout (``"sleep"``) — seeded by
(seed, round, partition) so a run is reproducible and a test can predict who
drops. With an encoded uplink (``comm.uplink``), :data:`ENCODING_MODES` send a
malformed encoding instead. On the server, ``fault.server-crash-round`` kills the
ServerApp's process between a round's aggregation and its checkpoint
(:func:`crash_after_aggregation`). Nothing here runs unless configured; the keys are
:class:`fedpeft.config.FaultConfig`, which checks ``fault.modes`` against :data:`MODES`.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.common.constant import LOG_UPLOAD_INTERVAL

from .arrays import Arrays
from .protocol import CODEC

log = logging.getLogger(__name__)
R = TypeVar("R")

# Malformed encodings of an encoded reply (comm.uplink other than "none"): mode → the
# uplink codec it needs ("" = any). They alter the encoded record after honest encoding.
ENCODING_MODES = {
    "codec-name": "", "part-dtype": "", "part-shape": "", "part-missing": "",
    "scale-nan": "int8", "scale-zero": "int8",
    "index-range": "topk", "index-duplicate": "topk", "index-unsorted": "topk",
    "topk-count": "topk",
}  # fmt: skip
MODES = (
    "raise", "sleep", "nan", "inf", "missing-key", "extra-key", "shape", "dtype", "oversize",
    "no-num-examples", "zero-num-examples", "float-num-examples", "huge-num-examples",
    "scale", "sign-flip", "fill", *ENCODING_MODES,
)  # fmt: skip


class FaultSettings(Protocol):
    """The ``fault.*`` keys read here; :class:`fedpeft.config.FaultConfig` is the one.

    A protocol, not the config class: the config package imports :data:`MODES` to
    validate ``fault.modes``, so this module does not import it back.
    """

    @property
    def dropout(self) -> float: ...
    @property
    def dropout_mode(self) -> str: ...
    @property
    def sleep(self) -> float: ...
    @property
    def server_crash_round(self) -> int: ...
    def by_partition(self) -> dict[int, str]: ...


class InjectedFaultError(RuntimeError):
    """Raised by a client that was told to fail."""


def drops_out(cfg: FaultSettings, seed: int, server_round: int, partition_id: int) -> bool:
    """Whether this client fails this round (seeded, so tests can predict it)."""
    if cfg.dropout <= 0:
        return False
    return random.Random(f"{seed}/{server_round}/{partition_id}").random() < cfg.dropout


def corrupt(mode: str, arrays: Arrays, sent: Arrays, scale: float) -> Arrays:
    """The arrays a client in ``mode`` sends instead of its honest ``arrays``.

    ``scale`` is the factor of ``scale`` / ``sign-flip`` (the update, reply − sent, times
    it) and the value ``fill`` writes into every entry (finite, so only a bound on the
    update's size can refuse it).
    """
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
    elif mode == "fill":
        out = {k: np.full_like(v, scale) for k, v in out.items()}
    elif mode in ("scale", "sign-flip"):
        factor = scale if mode == "scale" else -scale
        out = {k: (sent[k] + factor * (v - sent[k])).astype(v.dtype) for k, v in out.items()}
    return out


def corrupt_encoding(mode: str, record: ArrayRecord) -> ArrayRecord:
    """The encoded ``record`` altered as ``mode`` says (unchanged for other modes).

    Each alters the largest tensor's parts (``k``, ``k#index``) or the shared scales
    (``#scale``; see :mod:`fedpeft.wire`) so that exactly one check of the server's must
    refuse it.
    """
    if mode not in ENCODING_MODES or mode == "codec-name":
        return record
    out = {k: v.numpy() for k, v in record.items()}
    main = max((k for k in out if "#" not in k), key=lambda k: out[k].size)  # the largest
    scale, index = "#scale", f"{main}#index"
    if mode == "part-dtype":
        out[main] = out[main].astype(np.float64)
    elif mode == "part-shape":
        out[main] = np.concatenate([out[main].reshape(-1), out[main].reshape(-1)[:1]])
    elif mode == "part-missing":
        del out[next((k for k in (scale, index) if k in out), main)]
    elif mode == "scale-nan":
        out[scale] = np.full_like(out[scale], np.nan)
    elif mode == "scale-zero":
        out[scale] = np.zeros_like(out[scale])
    elif mode == "index-range":
        out[index] = out[index].copy()
        out[index][-1] = np.iinfo(out[index].dtype).max
    elif mode == "index-duplicate":
        out[index] = out[index].copy()
        out[index][1] = out[index][0]
    elif mode == "index-unsorted":
        out[index] = out[index][::-1].copy()
    elif mode == "topk-count":
        out[main], out[index] = out[main][:-1].copy(), out[index][:-1].copy()
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in out.items()})


def announce(mode: str, honest: ConfigRecord) -> ConfigRecord:
    """The reply's codec record: ``codec-name`` names a codec other than the honest one."""
    if mode != "codec-name":
        return honest
    return ConfigRecord({**honest, CODEC: "fp16" if honest[CODEC] != "fp16" else "bf16"})


def num_examples(mode: str, honest: int) -> int | float | None:
    """The ``num-examples`` a client in ``mode`` reports (None: leave it out)."""
    return {
        "no-num-examples": None,
        "zero-num-examples": 0,
        "float-num-examples": float(honest) + 0.5,
        "huge-num-examples": 10**12,
    }.get(mode, honest)


def before_training(cfg: FaultSettings, seed: int, server_round: int, partition_id: int) -> str:
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


def crash_after_aggregation(
    cfg: FaultSettings, evaluate_fn: Callable[[int, ArrayRecord], R]
) -> Callable[[int, ArrayRecord], R]:
    """``evaluate_fn``, but SIGKILL this process on entering round ``fault.server-crash-round``.

    The round loop evaluates a round's aggregated arrays right before it records and
    checkpoints them, so dying there is a crash after the replies arrived and before
    the checkpoint: nothing of the round reaches the disk. ``evaluate_fn`` itself when
    the drill is off (0).
    """
    if cfg.server_crash_round == 0:
        return evaluate_fn

    def crashing(server_round: int, arrays: ArrayRecord) -> R:
        if server_round == cfg.server_crash_round:
            log.warning("fault.server-crash-round=%d: SIGKILL after aggregation, before the "
                        "checkpoint", server_round)  # fmt: skip
            for handler in logging.getLogger().handlers:
                handler.flush()
            # Flower's log uploader ships a process's lines every LOG_UPLOAD_INTERVAL
            # seconds; waiting for two lets this one reach the run's log before the kill.
            time.sleep(2 * LOG_UPLOAD_INTERVAL)
            os.kill(os.getpid(), signal.SIGKILL)
        return evaluate_fn(server_round, arrays)

    return crashing
