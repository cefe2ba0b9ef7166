"""FedNCM before round 1: collect the clients' per-class feature sums, set the head.

A round of its own (``train.ncm`` messages to every eligible node, round 0 of the
record, its bytes counted there); each reply is checked like a training reply before
its numbers are used (:func:`check_statistics`), and the accepted ones are summed in
partition order, so the head is reproducible and equals the centralised class means.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid
from torch import nn

from fedpeft import protocol
from fedpeft.ncm import ncm_head

from .rounds import RoundStats
from .strategy import PeftFedAvg
from .validation import check_envelope, reply_node

log = logging.getLogger(__name__)

MESSAGE_TYPE = protocol.NCM
GROUP = "0"  # the record's round 0


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
        return f"expected arrays 'sums' and 'counts', got {sorted(arrays)}"
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


def initialise_head(
    strategy: PeftFedAvg, grid: Grid, arrays: ArrayRecord, keys: tuple[str, str], timeout: float
) -> ArrayRecord:
    """``arrays`` with the head set from every eligible node's statistics.

    Raises
    ------
    RuntimeError
        With fewer than ``server.min-replies`` usable replies.

    """
    stats = strategy.rounds[0] = RoundStats()
    weight_key, bias_key = keys
    classes, dim = arrays[weight_key].shape
    nodes = strategy.nodes.sample(grid, 0, 1.0, strategy.min_train_nodes,
                                  strategy.min_available_nodes)  # fmt: skip
    config = ConfigRecord({protocol.SERVER_ROUND: 0})
    sent = strategy.downlink_messages(nodes, arrays, config, MESSAGE_TYPE, GROUP, stats)
    replies = list(grid.send_and_receive(sent, timeout=timeout))
    counts_by_node = Counter(m.metadata.src_node_id for m in replies if not m.has_error())
    accepted: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    for msg in replies:
        node = reply_node(msg, sent)
        if msg.has_error():
            stats.errors[node] = msg.error.reason
            continue
        stats.count_received(msg.content)
        result = check_envelope(msg, 0, sent, counts_by_node) or check_statistics(
            msg.content, classes, dim, strategy.limits.max_num_examples
        )
        if isinstance(result, str):
            stats.rejected[node] = result
            log.warning("FedNCM: rejected the statistics of node %d (partition %s): %s", node,
                        strategy.nodes.label(node), result)  # fmt: skip
            continue
        accepted.append((strategy.nodes.partition_of(node), node, *result))
    stats.accepted = len(accepted)
    if len(accepted) < strategy.min_replies:
        stats.failure = f"FedNCM: {len(accepted)} usable statistics replies"
        raise RuntimeError(f"{stats.failure}, fewer than server.min-replies; head not set")
    total_sums = np.zeros((classes, dim), dtype=np.float64)
    total_counts = np.zeros(classes, dtype=np.int64)
    for _, _, sums, counts in sorted(accepted, key=lambda a: (a[0], a[1])):
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
