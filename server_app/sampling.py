"""Seeded client sampling keyed on partition ids, not on Flower's node ids.

Node ids are random and change every run; partition ids do not. Each node is
asked its partition id once (a ``query`` message answered by the ClientApp),
and every round samples partitions with a generator seeded by
(seed, round) — so a resumed run samples the clients the original would have.
The same reply announces a LoRA node's smaller rank (HetLoRA); a node announcing a
rank outside [1, ``max_rank``] is logged and never sampled. Flower's simulated nodes are
not asked: their partition ids follow from their registration order
(:mod:`server_app.sim_nodes`; ``server.infer-partitions``), their ranks from
``partition_rank``, and every training reply's ``partition-id`` is checked against it. With
``server.partition-registry`` a claim must match the node's authenticated public key
(:mod:`server_app.partition_keys`); a refused node is logged and never sampled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedpeft import protocol

from .partition_keys import PartitionKeys
from .sim_nodes import simulated_partitions
from .validation import reply_node

log = logging.getLogger(__name__)

UNKNOWN = 1 << 30  # nodes that did not tell their partition id sort last, by node id


class NodeDirectory:
    """Node id ↔ partition id, learned by querying each node once."""

    def __init__(
        self,
        seed: int,
        query_timeout: float = 120.0,
        exclude: frozenset[int] = frozenset(),
        max_rank: int = 0,
        keys: PartitionKeys | None = None,
        infer: bool = True,
        partition_rank: Callable[[int], int | None] = lambda pid: None,
    ) -> None:
        self.seed = seed
        self.query_timeout = query_timeout
        self.exclude = exclude
        self.max_rank = max_rank  # peft.lora.r; 0: not LoRA, no rank may be announced
        self.keys = keys  # server.partition-registry: who may claim which partition
        self.infer = infer and keys is None  # simulated nodes: no query (a registry: deployed)
        self.partition_rank = partition_rank  # the rank a simulated node's partition trains
        self._inferred: set[int] = set()  # nodes whose partition id was not told but inferred
        self._partition: dict[int, int] = {}
        self._rank: dict[int, int] = {}  # nodes below max_rank
        self._refused: set[int] = set()  # an unusable rank, or a claim the registry refuses
        self._told: set[int] = set()  # nodes that answered their query

    def rank_of(self, node_id: int) -> int | None:
        """The smaller LoRA rank the node announced, or ``None`` (the run's rank)."""
        return self._rank.get(node_id)

    def _learn_rank(self, node: int, announced: object) -> None:
        if announced is None:
            return
        if not protocol.is_int(announced) or not 1 <= announced <= self.max_rank:  # type: ignore[operator]
            self._refused.add(node)
            valid = f"[1, {self.max_rank}]" if self.max_rank else "none (not a LoRA run)"
            log.warning("node %d announced lora-rank %r; valid ranks: %s. It is not sampled",
                        node, announced, valid)  # fmt: skip
        elif announced < self.max_rank:
            self._rank[node] = announced

    def partition_of(self, node_id: int) -> int:
        """The node's partition id, or a large value past every partition if unknown."""
        return self._partition.get(node_id, UNKNOWN + node_id % UNKNOWN)

    def label(self, node_id: int) -> str:
        """The node's partition id as text, or ``"node <id>"`` if unknown."""
        pid = self._partition.get(node_id)
        return f"node {node_id}" if pid is None else str(pid)

    def partitions(self, node_ids: list[int]) -> list[int | str]:
        """Partition ids of ``node_ids`` (``"node <id>"`` where unknown), for logs."""
        return [self._partition.get(n, f"node {n}") for n in node_ids]

    def _infer(self, grid: Grid) -> None:
        """Learn simulated nodes' partition ids (and ranks) without a message, once."""
        self.infer = False
        mapping = simulated_partitions(grid.get_nodes())
        if not mapping:
            return
        for node, pid in mapping.items():
            self._partition[node] = pid
            self._learn_rank(node, self.partition_rank(pid))
        self._told |= mapping.keys()
        self._inferred = set(mapping)
        log.info("%d simulated nodes: partition ids from their registration order, not "
                 "asked (server.infer-partitions)", len(mapping))  # fmt: skip

    def confirm(self, node_id: int, reported: object) -> None:
        """Check the ``partition-id`` a reply reports against the inferred one; on a
        mismatch forget every inferred id, so the next round queries those nodes.
        """  # noqa: D205
        if node_id not in self._inferred or reported == self._partition[node_id]:
            return
        log.error("node %d reports partition %r, not %d as inferred from its registration "
                  "order: asking every node instead (server.infer-partitions)", node_id,
                  reported, self._partition[node_id])  # fmt: skip
        for node in self._inferred:
            del self._partition[node]
            self._rank.pop(node, None)
            self._refused.discard(node)
        self._told -= self._inferred
        self._inferred = set()

    def learn(self, grid: Grid, node_ids: list[int]) -> None:
        """Query the nodes that have not answered yet (each costs a ClientApp start).

        ``node_ids`` are the connected nodes. A partition is held by the connected node
        that claimed it first; a claim on a partition whose holder is no longer
        connected takes it over (a SuperNode that restarted without authentication
        comes back with a new node id).
        """
        if self.infer:
            self._infer(grid)
        new = [n for n in node_ids if n not in self._told]
        if not new:
            return
        # With a registry: each node's authenticated public key, as the SuperLink has it
        public = {n.node_id: n.public_key for n in grid.get_nodes()} if self.keys else {}
        queries = [Message(RecordDict(), dst_node_id=n, message_type=protocol.QUERY) for n in new]
        connected = set(node_ids)
        holder = {pid: n for n, pid in self._partition.items()}
        for reply in grid.send_and_receive(queries, timeout=self.query_timeout):
            node = reply_node(reply, queries)
            if reply.has_error() or protocol.NODE not in reply.content.metric_records:
                log.warning("node %d did not tell its partition id; ordered by node id", node)
                continue
            self._told.add(node)  # answered: not asked again (a folder node tells no id)
            announced = reply.content.metric_records[protocol.NODE]
            self._learn_rank(node, announced.get(protocol.LORA_RANK))  # a folder node has one too
            pid = announced.get(protocol.PARTITION_ID)
            why = (
                self.keys.refusal(pid, public.get(node))
                if self.keys and isinstance(pid, int)
                else None
            )
            if why:  # before the duplicate check: the owner may have claimed first
                self._refused.add(node)
                log.warning("node %d refused: %s. It is not sampled", node, why)
                continue
            if pid is None:  # a node on its own image folder (node-config data-path)
                log.info("node %d has its own data, no partition id; ordered by node id", node)
                continue
            if not isinstance(pid, int) or holder.get(pid) in connected:
                self._refused.add(node)  # sampling it would count that partition twice
                log.warning("node %d: unusable partition id %r, or one a connected node "
                            "holds. It is not sampled", node, pid)  # fmt: skip
                continue
            if pid in holder:  # its holder left (a SuperNode that re-registered: a new id)
                gone = holder[pid]
                del self._partition[gone]
                self._told.discard(gone)  # asked again if that id comes back
                log.info("partition %d: node %d left; node %d holds it now", pid, gone, node)
            self._partition[node] = pid
            holder[pid] = node

    def sample(
        self,
        grid: Grid,
        server_round: int,
        fraction: float,
        min_nodes: int,
        min_available: int,
        count: int = 0,
    ) -> list[int]:
        """Wait for enough nodes, then sample ``count`` (or ``max(fraction·N, min_nodes)``)."""
        wanted = max(min_available, min_nodes, count)
        while len(node_ids := list(grid.get_node_ids())) < wanted:
            log.info("Waiting for nodes: %d connected, %d needed", len(node_ids), wanted)
            time.sleep(1)
        self.learn(grid, node_ids)
        usable = [n for n in node_ids if n not in self._refused]
        eligible = [n for n in usable if self._partition.get(n) not in self.exclude]
        ordered = sorted(eligible, key=lambda n: (self.partition_of(n), n))
        size = min(len(ordered), count or max(int(len(ordered) * fraction), min_nodes))
        rng = np.random.default_rng([self.seed, server_round])
        picked = np.sort(rng.choice(len(ordered), size=size, replace=False))
        return [ordered[i] for i in picked]


@dataclass(frozen=True)
class Sample:
    """The sampling step: which nodes a round (or its evaluation) sends to.

    ``count`` nodes, or ``max(fraction·N, min_nodes)``, seeded by (seed, round) over the
    partition ids of ``nodes``; waits for ``min_available`` connected nodes first.
    """

    nodes: NodeDirectory
    fraction: float
    min_nodes: int
    min_available: int
    count: int = 0

    def __call__(self, grid: Grid, server_round: int) -> list[int]:
        """The node ids sampled for ``server_round``."""
        return self.nodes.sample(grid, server_round, self.fraction, self.min_nodes,
                                 self.min_available, self.count)  # fmt: skip
