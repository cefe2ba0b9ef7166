"""Seeded client sampling keyed on partition ids, not on Flower's node ids.

Node ids are random and change every run; partition ids do not. Each node is
asked its partition id once (a ``query`` message answered by the ClientApp),
and every round samples partitions with a generator seeded by
(seed, round) — so a resumed run samples the clients the original would have.
The same reply announces a LoRA node's smaller rank (HetLoRA); a node announcing a
rank outside [1, ``max_rank``] is logged and never sampled. With
``server.partition-registry`` a claim must match the node's authenticated public key
(:mod:`server_app.partition_keys`); a refused node is logged and never sampled.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from .partition_keys import PartitionKeys

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
    ) -> None:
        self.seed = seed
        self.query_timeout = query_timeout
        self.exclude = exclude
        self.max_rank = max_rank  # peft.lora.r; 0: not LoRA, no rank may be announced
        self.keys = keys  # server.partition-registry: who may claim which partition
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
        if (isinstance(announced, bool) or not isinstance(announced, int)
                or not 1 <= announced <= self.max_rank):  # fmt: skip
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

    def learn(self, grid: Grid, node_ids: list[int]) -> None:
        """Query the nodes that have not answered yet (each costs a ClientApp start)."""
        new = [n for n in node_ids if n not in self._told]
        if not new:
            return
        # With a registry: each node's authenticated public key, as the SuperLink has it
        public = {n.node_id: n.public_key for n in grid.get_nodes()} if self.keys else {}
        queries = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in new]
        for reply in grid.send_and_receive(queries, timeout=self.query_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error() or "node" not in reply.content.metric_records:
                log.warning("node %d did not tell its partition id; ordered by node id", node)
                continue
            self._told.add(node)  # answered: not asked again (a folder node tells no id)
            announced = reply.content.metric_records["node"]
            self._learn_rank(node, announced.get("lora-rank"))  # a folder node has one too
            pid = announced.get("partition-id")
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
            if not isinstance(pid, int) or pid in self._partition.values():
                log.warning("node %d: unusable or duplicate partition id %r", node, pid)
                continue
            self._partition[node] = pid

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
