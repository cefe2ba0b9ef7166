"""FedAvg over the trainable PEFT tensors, with reply checks and byte accounting."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedpeft.arrays import payload_bytes, theoretical_bytes, wire_bytes

from .validation import TensorSpec, check_reply

log = logging.getLogger(__name__)


@dataclass
class RoundStats:
    """What one training round sent, received, accepted and rejected."""

    sent_to: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    theoretical_down: int = 0
    theoretical_up: int = 0
    payload_up: int = 0
    accepted: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    client_metrics: list[dict[str, float | int]] = field(default_factory=list)
    aggregated: bool = False


class PeftFedAvg(FedAvg):
    """FedAvg that aggregates only the trainable tensors of a PEFT model.

    Beyond :class:`flwr.serverapp.strategy.FedAvg` it checks every reply
    against the reference trainable set (a bad reply is dropped with a logged
    reason, the others are still aggregated) and measures the bytes of the
    serialised arrays sent down and received up each round.

    Parameters
    ----------
    reference : dict[str, TensorSpec]
        Keys, shapes and dtypes of the trainable tensors of the seeded model.
    **kwargs
        Passed to :class:`~flwr.serverapp.strategy.FedAvg`.

    """

    def __init__(self, reference: dict[str, TensorSpec], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.reference = reference
        self.rounds: dict[int, RoundStats] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample clients and send them the trainable arrays; count the bytes."""
        extra = sorted(set(arrays) - set(self.reference))
        if extra:  # never send anything but the trainable set
            raise ValueError(f"refusing to send non-trainable arrays {extra[:5]}")
        messages = list(super().configure_train(server_round, arrays, config, grid))
        per_client = wire_bytes(arrays)
        self.rounds[server_round] = RoundStats(
            sent_to=len(messages),
            bytes_down=per_client * len(messages),
            theoretical_down=theoretical_bytes(arrays) * len(messages),
        )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop invalid replies (logged), then sample-weighted FedAvg of the rest."""
        stats = self.rounds.setdefault(server_round, RoundStats())
        valid: list[Message] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                stats.errors[node] = msg.error.reason
                log.warning(
                    "round %d: node %d replied with an error: %s",
                    server_round,
                    node,
                    msg.error.reason,
                )
                continue
            for record in msg.content.array_records.values():
                stats.bytes_up += wire_bytes(record)
                stats.payload_up += payload_bytes(record)
                stats.theoretical_up += theoretical_bytes(record)
            reason = check_reply(msg.content, self.reference, self.weighted_by_key)
            if reason is not None:
                stats.rejected[node] = reason
                log.warning("round %d: rejected reply of node %d: %s", server_round, node, reason)
                continue
            valid.append(msg)
            metrics = next(iter(msg.content.metric_records.values()))
            stats.client_metrics.append(
                {k: v for k, v in metrics.items() if not isinstance(v, list)}
            )
        stats.accepted = len(valid)
        if not valid:
            log.warning("round %d: no valid replies; global state unchanged", server_round)
            return None, None
        arrays, metrics = super().aggregate_train(server_round, valid)
        stats.aggregated = arrays is not None
        return arrays, metrics
