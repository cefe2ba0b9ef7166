"""Federated evaluation of :class:`~server_app.strategy.PeftFedAvg`: checked, seeded, recorded.

With ``server.fraction-evaluate`` > 0, after each round's aggregation a seeded sample
of nodes evaluates the new global model on the images each holds out from its
training (``data.local-test-fraction``), with its own local tensors: personalised
where the method keeps some on the client (FedSA-LoRA's B, ``peft.head.local``), the
global model on the client's own distribution otherwise. Each reply is checked like a
training reply's envelope and its metrics (a positive integer ``num-examples`` within
bounds, an accuracy in [0, 1], a loss ≥ 0 or NaN); a bad one is dropped with a logged
reason. The accepted ones are averaged by ``num-examples`` in partition order and
recorded beside the server's accuracy on the central test split.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedpeft.protocol import (
    EVAL_ACC,
    EVAL_LOSS,
    EVALUATE,
    NUM_EXAMPLES,
    SERVER_ROUND,
    is_number,
    is_positive_int,
)

from .downlink import Downlink
from .rounds import RoundStats
from .validation import check_envelope, reply_node

log = logging.getLogger(__name__)


def check_evaluation(
    content: RecordDict, max_num_examples: int = 0
) -> tuple[int, float, float] | str:
    """``(num-examples, eval-acc, eval-loss)`` of an evaluate reply, or why it is unusable."""
    if content.array_records or len(content.metric_records) != 1:
        return "an evaluate reply carries exactly one MetricRecord and no arrays"
    metrics = next(iter(content.metric_records.values()))
    n, acc, loss = (metrics.get(k) for k in (NUM_EXAMPLES, EVAL_ACC, EVAL_LOSS))
    if not is_positive_int(n):
        return f"num-examples={n!r} is not a positive integer"
    if max_num_examples and n > max_num_examples:
        return f"num-examples={n} is implausibly large (limit {max_num_examples})"
    if not is_number(acc) or not 0 <= acc <= 1:
        return f"eval-acc={acc!r} is not an accuracy in [0, 1]"
    if not is_number(loss) or loss < 0:
        return f"eval-loss={loss!r} is not a loss >= 0"
    return n, float(acc), float(loss)


class ClientEvaluation(Downlink):
    """Mixin for :class:`~server_app.strategy.PeftFedAvg` (its ``nodes``, ``rounds``,
    ``limits``, ``downlink_messages`` and Flower's FedAvg fields).
    """  # noqa: D205

    fraction_evaluate: float
    min_evaluate_nodes: int
    min_available_nodes: int
    arrayrecord_key: str
    configrecord_key: str
    rounds: dict[int, RoundStats]
    nodes: Any
    limits: Any

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample ``fraction_evaluate`` of the nodes (seeded by round); send the global arrays."""
        if self.fraction_evaluate == 0.0:
            return []
        node_ids = self.nodes.sample(grid, server_round, self.fraction_evaluate,
                                     self.min_evaluate_nodes, self.min_available_nodes)  # fmt: skip
        config[SERVER_ROUND] = server_round
        messages = self.downlink_messages(node_ids, arrays, config, EVALUATE, str(server_round))
        self._eval_sent = {server_round: messages}
        log.info("round %d: evaluating on partitions %s", server_round,
                 self.nodes.partitions(node_ids))  # fmt: skip
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Drop bad replies (logged), then average by ``num-examples`` in partition order."""
        stats = self.rounds.setdefault(server_round, RoundStats())
        sent = getattr(self, "_eval_sent", {}).get(server_round)
        replies = list(replies)
        counts = Counter(m.metadata.src_node_id for m in replies if not m.has_error())
        accepted: list[tuple[tuple[int, int], tuple[int, float, float]]] = []
        for msg in replies:
            node = reply_node(msg, sent)
            result = (
                f"failed: {msg.error.reason}"
                if msg.has_error()
                else check_envelope(msg, server_round, sent, counts)
                or check_evaluation(msg.content, self.limits.max_num_examples)
            )
            if isinstance(result, str):
                stats.eval_rejected[self.nodes.label(node)] = result
                log.warning("round %d: dropped the evaluation of node %d (partition %s): %s",
                            server_round, node, self.nodes.label(node), result)  # fmt: skip
                continue
            accepted.append(((self.nodes.partition_of(node), node), result))
        if not accepted:
            return None
        accepted.sort(key=lambda pair: pair[0])
        total = sum(n for _, (n, _, _) in accepted)
        acc = math.fsum(n * a for _, (n, a, _) in accepted) / total
        loss = math.fsum(n * x for _, (n, _, x) in accepted) / total
        stats.client_eval = {"client_accuracy": acc, "client_loss": loss,
                             "clients_evaluated": len(accepted)}  # fmt: skip
        return MetricRecord({EVAL_ACC: acc, EVAL_LOSS: loss, NUM_EXAMPLES: total})
