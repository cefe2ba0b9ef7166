"""What a training round did, as the strategy counts it and as the round loop hands it on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedpeft.arrays import payload_bytes, theoretical_bytes, wire_bytes


@dataclass
class RoundStats:
    """What one training round sent, received, accepted and rejected (by node id)."""

    sent_to: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    theoretical_down: int = 0
    theoretical_up: int = 0
    payload_up: int = 0
    accepted: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    silent: list[int] = field(default_factory=list)  # sampled nodes that never replied
    client_metrics: list[dict[str, float | int]] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)  # by partition label
    update_norms: dict[str, float] = field(default_factory=dict)
    global_norm: float | None = None  # ‖sent‖ (the poisoning guard computes it)
    aggregated: bool = False
    failure: str = ""
    population: int = 0
    lr: float | None = None  # sent in the round's train config
    dp: dict[str, float | int] = field(default_factory=dict)
    fp32_transfer: int = 0  # bytes of the trainable set in fp32, one way (set when encoding)
    replies: int = 0  # replies whose bytes were counted
    started: float = field(default_factory=time.perf_counter)
    train_seconds: float = 0.0

    def count_sent(self, arrays: ArrayRecord, messages: int) -> None:
        """Count ``arrays`` sent to ``messages`` nodes (serialised and raw bytes)."""
        self.sent_to = messages
        self.bytes_down = wire_bytes(arrays) * messages
        self.theoretical_down = theoretical_bytes(arrays) * messages

    def count_received(self, content: RecordDict) -> None:
        """Count the ArrayRecords of one reply (serialised, payload and raw bytes)."""
        self.replies += 1
        for record in content.array_records.values():
            self.bytes_up += wire_bytes(record)
            self.payload_up += payload_bytes(record)
            self.theoretical_up += theoretical_bytes(record)

    def count_accepted(
        self, label: str, weight: int, metrics: MetricRecord, norm: float | None
    ) -> None:
        """Record an accepted reply of partition ``label``: its weight, metrics and norm."""
        self.client_metrics.append({k: v for k, v in metrics.items() if not isinstance(v, list)})
        self.weights[label] = weight
        if norm is not None:
            self.update_norms[label] = norm

    def _ratio(self, counted: int, transfers: int) -> float | None:
        """``counted`` bytes over what ``transfers`` fp32 transfers take (when encoding)."""
        if not self.fp32_transfer or not transfers:
            return None
        return counted / (self.fp32_transfer * transfers)

    def record_fields(self, label: Callable[[int], str]) -> dict[str, Any]:
        """The :class:`~fedpeft.record.RoundRecord` fields this round's counts give.

        ``label`` maps a node id to its partition label (node ids change every run).
        """
        return {
            "clients": self.sent_to,
            "accepted": self.accepted,
            "rejected": len(self.rejected),
            "failed": len(self.errors),
            "no_reply": self.sent_to - self.accepted - len(self.rejected) - len(self.errors),
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "theoretical_down": self.theoretical_down,
            "theoretical_up": self.theoretical_up,
            "payload_up": self.payload_up,
            "train_seconds": self.train_seconds,
            "failed_round": bool(self.failure),
            "failure": self.failure,
            "lr": self.lr,
            "rejections": {label(k): v for k, v in self.rejected.items()},
            "errors": {label(k): v for k, v in self.errors.items()},
            "no_reply_partitions": [label(n) for n in self.silent],
            "client_metrics": self.client_metrics,
            "weights": self.weights,
            "update_norms": self.update_norms,
            "global_norm": self.global_norm,
            "downlink_ratio": self._ratio(self.bytes_down, self.sent_to),
            "uplink_ratio": self._ratio(self.bytes_up, self.replies),
            **self.dp,  # dp_epsilon (central) / dp_epsilon_max (local), cumulative
        }


@dataclass(frozen=True)
class RoundEnd:
    """What the round loop hands the recorder once a round is evaluated.

    ``counts`` are the round's :meth:`RoundStats.record_fields` (empty for round 0,
    which only evaluates the initial arrays); ``strategy_state`` (JSON) and
    ``strategy_arrays`` (tensors) are what a checkpoint needs to resume the strategy
    after this round.
    """

    server_round: int
    arrays: ArrayRecord
    evaluation: MetricRecord
    counts: dict[str, Any]
    strategy_state: dict[str, Any]
    strategy_arrays: dict[str, np.ndarray] = field(default_factory=dict)
