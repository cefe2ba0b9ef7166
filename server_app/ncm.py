"""FedNCM before round 1: collect the clients' per-class feature sums, set the head.

A round of its own (``train.ncm`` messages to every eligible node, round 0 of the
record, its bytes counted there); each reply is checked like a training reply before
its numbers are used (:func:`check_statistics`), and the accepted ones are summed in
partition order, so the head is reproducible and equals the centralised class means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from torch import nn

from fedpeft import protocol
from fedpeft.ncm import ncm_head

from .downlink import Send
from .replies import Envelope, walk
from .rounds import RoundStats
from .sampling import Sample

log = logging.getLogger(__name__)

MESSAGE_TYPE = protocol.NCM
ROUND = 0  # the record's round 0


def head_keys(model: nn.Module) -> tuple[str, str]:
    """Names of the classification head's weight and bias among the model's parameters."""
    head = model.get_classifier()
    names = {id(p): n for n, p in model.named_parameters()}
    return names[id(head.weight)], names[id(head.bias)]


def check_statistics(
    content: RecordDict, classes: int, dim: int, max_examples: int
) -> tuple[np.ndarray, np.ndarray] | str:
    """The reply's (sums, counts), or the reason it is unusable (names the bad field)."""
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return "expected one ArrayRecord and one MetricRecord"
    arrays = next(iter(content.array_records.values()))
    if set(arrays) != {protocol.SUMS, protocol.COUNTS}:
        return f"expected arrays {protocol.SUMS!r} and {protocol.COUNTS!r}, got {sorted(arrays)}"
    n = next(iter(content.metric_records.values())).get(protocol.NUM_EXAMPLES)
    if not protocol.is_positive_int(n):
        return f"num-examples={n!r}: expected a positive integer"
    if max_examples and n > max_examples:
        return f"num-examples={n} exceeds the bound {max_examples}"
    sums, counts = arrays[protocol.SUMS].numpy(), arrays[protocol.COUNTS].numpy()
    if sums.dtype != np.float32 or sums.shape != (classes, dim):
        return f"sums: {sums.dtype} {sums.shape}, expected float32 {(classes, dim)}"
    if counts.dtype != np.int64 or counts.shape != (classes,):
        return f"counts: {counts.dtype} {counts.shape}, expected int64 {(classes,)}"
    if not np.isfinite(sums).all():
        return "sums: not finite"
    if (counts < 0).any() or int(counts.sum()) != n:
        return f"counts: must be >= 0 and add up to num-examples={n} (got {int(counts.sum())})"
    return sums, counts


@dataclass(frozen=True)
class FedNcm:
    """FedNCM's round 0: every eligible node's class statistics, then the head.

    ``sample`` draws every eligible node (fraction 1), ``send`` sends them the global
    arrays; at least ``min_replies`` usable replies, each within ``max_num_examples``.
    """

    sample: Sample
    send: Send
    min_replies: int = 1
    max_num_examples: int = 0

    def __call__(self, grid: Grid, arrays: ArrayRecord, keys: tuple[str, str], timeout: float,
                 stats: RoundStats) -> ArrayRecord:  # fmt: skip
        """``arrays`` with the head set from every eligible node's statistics.

        Raises
        ------
        RuntimeError
            With fewer than ``server.min-replies`` usable replies.

        """
        weight_key, bias_key = keys
        classes, dim = arrays[weight_key].shape
        nodes = self.sample(grid, ROUND)
        config = ConfigRecord({protocol.SERVER_ROUND: ROUND})
        sent = self.send(nodes, arrays, config, MESSAGE_TYPE, ROUND, stats).messages
        directory = self.sample.nodes

        def failed(node: int, reason: str) -> None:
            stats.errors[node] = reason

        def reject(node: int, reason: str) -> None:
            stats.rejected[node] = reason
            log.warning("FedNCM: rejected the statistics of node %d (partition %s): %s", node,
                        directory.label(node), reason)  # fmt: skip

        def check(msg: Message, envelope: Envelope) -> tuple[np.ndarray, np.ndarray] | str:
            return envelope.reason(msg) or check_statistics(
                msg.content, classes, dim, self.max_num_examples
            )

        walked = walk(grid.send_and_receive(sent, timeout=timeout), ROUND, sent, check,
                      on_error=failed, on_reject=reject,
                      on_content=stats.count_received)  # fmt: skip
        accepted = walked.accepted
        stats.accepted = len(accepted)
        if len(accepted) < self.min_replies:
            stats.failure = f"FedNCM: {len(accepted)} usable statistics replies"
            raise RuntimeError(f"{stats.failure}, fewer than server.min-replies; head not set")
        total_sums = np.zeros((classes, dim), dtype=np.float64)
        total_counts = np.zeros(classes, dtype=np.int64)
        for a in sorted(accepted, key=lambda a: (directory.partition_of(a.node), a.node)):
            sums, counts = a.value
            total_sums += sums
            total_counts += counts
        weight, bias = ncm_head(total_sums, total_counts)
        seen = int((total_counts > 0).sum())
        log.info("FedNCM: head set from %d clients' class means (%d images, %d of %d classes)",
                 len(accepted), int(total_counts.sum()), seen, classes)  # fmt: skip
        out = dict(arrays.items())
        out[weight_key] = Array(weight.astype(arrays[weight_key].numpy().dtype))
        out[bias_key] = Array(bias.astype(arrays[bias_key].numpy().dtype))
        return ArrayRecord(out)
