"""The tally step: order the accepted replies, name the silent nodes, count what came back.

The accepted replies are put in partition-id order (so every float sum after this is
reproducible), each one's weight, metrics and norm recorded by partition, its reported
partition id checked against the inferred one, and local DP's cumulative ε kept per
partition (checkpointed: :meth:`Tally.state`).
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import Message

from fedpeft import protocol

from .replies import Walked
from .reply_check import Candidate
from .rounds import RoundStats
from .sampling import NodeDirectory

log = logging.getLogger(__name__)

STATE_KEY = "client_epsilon"


class Tally:
    """Counts a round's accepted replies; keeps each partition's latest local-DP ε."""

    def __init__(self, nodes: NodeDirectory) -> None:
        self.nodes = nodes
        self.client_epsilon: dict[int, float] = {}  # local DP: latest ε per partition

    def __call__(self, server_round: int, walked: Walked[Candidate], accepted: list[Candidate],
                 sent: list[Message] | None, stats: RoundStats) -> list[Candidate]:  # fmt: skip
        """``accepted`` in partition order, counted in ``stats``."""
        if sent is not None:  # sampled, but no reply before the round's timeout
            silent = walked.silent(sent)
            stats.silent = sorted(silent, key=lambda n: (self.nodes.partition_of(n), n))
            if silent:
                log.warning("round %d: no reply from partitions %s (dropped out or past the "
                            "round timeout)", server_round,
                            [self.nodes.label(n) for n in stats.silent])  # fmt: skip
        accepted = sorted(accepted, key=lambda c: (c.update.partition_id, c.update.node_id))
        stats.accepted = len(accepted)
        for candidate in accepted:
            update = candidate.update
            metrics = next(iter(candidate.message.content.metric_records.values()))
            self.nodes.confirm(update.node_id, metrics.get(protocol.PARTITION_ID))
            label = self.nodes.label(update.node_id)
            stats.count_accepted(label, update.weight, metrics, candidate.norm)
            if protocol.DP_EPSILON in metrics:  # local DP: each client's cumulative ε
                self.client_epsilon[update.partition_id] = float(metrics[protocol.DP_EPSILON])
        if self.client_epsilon:
            stats.dp["dp_epsilon_max"] = max(self.client_epsilon.values())
        return accepted

    def state(self) -> dict[str, Any]:
        """Local DP's ε per partition (nothing without it)."""
        if not self.client_epsilon:
            return {}
        return {STATE_KEY: {str(k): v for k, v in self.client_epsilon.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.client_epsilon = {int(k): v for k, v in state.get(STATE_KEY, {}).items()}
