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
from collections.abc import Iterable
from dataclasses import dataclass

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

from .downlink import Send
from .replies import Envelope, walk
from .rounds import RoundStats
from .sampling import Sample

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


@dataclass(frozen=True)
class ClientEvaluation:
    """The evaluation step: send the new global arrays to a sample; check and average.

    ``sample`` draws the evaluating nodes (``server.fraction-evaluate``), ``send`` sends
    them in ``comm.downlink``, ``max_num_examples`` bounds a reply's ``num-examples``.
    """

    sample: Sample
    send: Send
    max_num_examples: int = 0

    def configure(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                  grid: Grid) -> list[Message]:  # fmt: skip
        """Sample the evaluating nodes (seeded by round); the messages sending them arrays."""
        if self.sample.fraction == 0.0:
            return []
        node_ids = self.sample(grid, server_round)
        config[SERVER_ROUND] = server_round
        messages = self.send(node_ids, arrays, config, EVALUATE, server_round).messages
        log.info("round %d: evaluating on partitions %s", server_round,
                 self.sample.nodes.partitions(node_ids))  # fmt: skip
        return messages

    def aggregate(
        self, server_round: int, replies: Iterable[Message], sent: list[Message] | None,
        stats: RoundStats,
    ) -> MetricRecord | None:  # fmt: skip
        """Drop bad replies (logged), then average by ``num-examples`` in partition order."""
        nodes = self.sample.nodes

        def drop(node: int, reason: str) -> None:
            stats.eval_rejected[nodes.label(node)] = reason
            log.warning("round %d: dropped the evaluation of node %d (partition %s): %s",
                        server_round, node, nodes.label(node), reason)  # fmt: skip

        def check(msg: Message, envelope: Envelope) -> tuple[int, float, float] | str:
            return envelope.reason(msg) or check_evaluation(msg.content, self.max_num_examples)

        walked = walk(replies, server_round, sent, check, on_reject=drop,
                      on_error=lambda node, reason: drop(node, f"failed: {reason}"))  # fmt: skip
        accepted = sorted(walked.accepted, key=lambda a: (nodes.partition_of(a.node), a.node))
        if not accepted:
            return None
        total = sum(a.value[0] for a in accepted)
        acc = math.fsum(a.value[0] * a.value[1] for a in accepted) / total
        loss = math.fsum(a.value[0] * a.value[2] for a in accepted) / total
        stats.client_eval = {"client_accuracy": acc, "client_loss": loss,
                             "clients_evaluated": len(accepted)}  # fmt: skip
        return MetricRecord({EVAL_ACC: acc, EVAL_LOSS: loss, NUM_EXAMPLES: total})

    def __call__(self, grid: Grid, server_round: int, arrays: ArrayRecord,
                 config: ConfigRecord, timeout: float, stats: RoundStats
                 ) -> MetricRecord | None:  # fmt: skip
        """Evaluate ``arrays`` on a sample of the clients; their weighted mean, if any."""
        messages = self.configure(server_round, arrays, config, grid)
        replies = grid.send_and_receive(messages, timeout=timeout)
        return self.aggregate(server_round, replies, messages, stats)
