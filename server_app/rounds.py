"""What a training round did, as the strategy counts it and as the round loop hands it on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedpeft.arrays import payload_bytes, theoretical_bytes, wire_bytes


@dataclass
class Sent:
    """A training round's messages and the (fp32) arrays they carried."""

    messages: list[Message]
    arrays: dict[str, np.ndarray]


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
    # comm.*: bytes of what was encoded against the same arrays in fp32 (downlink: all
    # messages; uplink: the accepted replies, whose decoded arrays the server has)
    fp32_down: int = 0
    encoded_up: int = 0
    fp32_up: int = 0
    client_eval: dict[str, float | int] = field(default_factory=dict)  # server.fraction-evaluate
    eval_rejected: dict[str, str] = field(default_factory=dict)  # partition → reason
    secagg_bytes: dict[str, int] = field(default_factory=dict)  # SecAgg+ stage → bytes both ways
    started: float = field(default_factory=time.perf_counter)
    train_seconds: float = 0.0

    def count_sent(
        self, arrays: ArrayRecord, messages: int, fp32: ArrayRecord | None = None
    ) -> None:
        """Count ``arrays`` sent to ``messages`` nodes (serialised and raw bytes).

        Called once per distinct record a round sends (HetLoRA: one per rank), it adds up.
        ``fp32``: the same tensors unencoded, when ``arrays`` is their downlink encoding.
        """
        self.sent_to += messages
        self.bytes_down += wire_bytes(arrays) * messages
        self.theoretical_down += theoretical_bytes(arrays) * messages
        if fp32 is not None:
            self.fp32_down += wire_bytes(fp32) * messages

    def count_encoded(self, content: RecordDict, decoded: dict[str, np.ndarray]) -> None:
        """Count an accepted encoded reply against its ``decoded`` arrays sent as fp32."""
        self.encoded_up += sum(wire_bytes(r) for r in content.array_records.values())
        self.fp32_up += wire_bytes(ArrayRecord({k: Array(v) for k, v in decoded.items()}))

    def count_received(self, content: RecordDict) -> None:
        """Count the ArrayRecords of one reply (serialised, payload and raw bytes)."""
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
            "downlink_ratio": self.bytes_down / self.fp32_down if self.fp32_down else None,
            "uplink_ratio": self.encoded_up / self.fp32_up if self.fp32_up else None,
            "eval_rejections": self.eval_rejected,
            "secagg_bytes": self.secagg_bytes,
            **self.client_eval,  # client_accuracy, client_loss, clients_evaluated
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
