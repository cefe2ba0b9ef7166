"""Simulated SuperNodes' partition ids from their registration order, without a query."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.common.constant import HEARTBEAT_INTERVAL_INF
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce.vce_api import _register_node_info_stores, _register_nodes
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.superlink.federation import NoOpFederationManager

from server_app.sampling import NodeDirectory
from server_app.sim_nodes import simulated_partitions
from server_app.strategy import PeftFedAvg
from server_app.validation import reference_specs
from tests.fakes import HEAD_REF, FakeGrid, head_update

T0 = datetime(2026, 12, 3, tzinfo=timezone.utc)


def _simulated(node_ids: list[int], step_us: int = 50) -> list[NodeInfo]:
    """Nodes as Flower's simulation registers them: one after the other, no heartbeat."""
    return [NodeInfo(node_id=n, heartbeat_interval=HEARTBEAT_INTERVAL_INF,
                     registered_at=(T0 + timedelta(microseconds=i * step_us)).isoformat())
            for i, n in enumerate(node_ids)]  # fmt: skip


class SimGrid(FakeGrid):
    """FakeGrid whose nodes look simulated, registered in ``registered`` order; train
    replies report the node's partition id, as the ClientApp's do.
    """

    def __init__(self, partitions: dict[int, int], registered: list[int]) -> None:
        super().__init__(partitions, {n: lambda sent, r: (head_update(0.1), 10)
                                      for n in partitions})  # fmt: skip
        self.registered = registered

    def get_nodes(self) -> Iterable[NodeInfo]:
        return _simulated(self.registered)

    def send_and_receive(self, messages, *, timeout=None):
        out = super().send_and_receive(messages, timeout=timeout)
        for msg in out:
            if msg.metadata.message_type == "train":
                msg.content["metrics"]["partition-id"] = self.partitions[msg.metadata.src_node_id]
        return out


def _queries(grid: FakeGrid) -> list[int]:
    return sorted(m.metadata.dst_node_id for m in grid.sent if m.metadata.message_type == "query")


def test_the_inferred_ids_are_the_partition_ids_flower_gives_its_simulated_nodes():
    # Prepare: Flower's simulation engine registers 300 SuperNodes in its link state
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(),
                               ObjectStoreFactory())  # fmt: skip
    stores = _register_node_info_stores(_register_nodes(300, factory), Run.create_empty(1))
    # Execute: what the ServerApp's grid.get_nodes() returns from that state
    inferred = simulated_partitions(factory.state().get_node_info(node_ids=list(stores)))
    # Assert: each node's partition id is the one in the node-config its ClientApp reads
    assert inferred == {n: s.node_config["partition-id"] for n, s in stores.items()}


def test_deployed_or_ambiguous_nodes_are_not_inferred():
    # Prepare: a SuperNode that heartbeats (deployed); two nodes registered at one instant
    deployed = [*_simulated([1, 2]), NodeInfo(node_id=3, heartbeat_interval=30.0,
                                              registered_at=T0.isoformat())]  # fmt: skip
    # Execute / Assert
    assert simulated_partitions(deployed) is None
    assert simulated_partitions(_simulated([1, 2, 3], step_us=0)) is None
    assert simulated_partitions([]) is None
    assert simulated_partitions(_simulated([7, 5, 9])) == {7: 0, 5: 1, 9: 2}


def test_simulated_nodes_are_sampled_as_queried_ones_without_a_query():
    # Prepare: the same 12 partitions on nodes with other ids, one run simulated
    ids = [9001, 17, 4242, 5, 77777, 31, 8, 123456, 42, 7, 900, 3]
    queried = FakeGrid({n: p for p, n in enumerate(ids)}, {})
    simulated = SimGrid({n: p for p, n in enumerate(reversed(ids))}, list(reversed(ids)))
    ranks = NodeDirectory(0, max_rank=4, partition_rank=lambda pid: 2 if pid % 3 == 0 else None)
    # Execute
    a = [NodeDirectory(5).sample(queried, r, 0.25, 2, 2) for r in (1, 2, 3)]
    b = [(d := NodeDirectory(5)).sample(simulated, r, 0.25, 2, 2) for r in (1, 2, 3)]
    ranks.sample(simulated, 1, 1.0, 1, 1)
    # Assert: the same partitions each round, and no query at all
    assert [[queried.partitions[n] for n in s] for s in a] == [
        [simulated.partitions[n] for n in s] for s in b
    ]
    assert _queries(simulated) == []
    assert d.label(3) == "0" and d.partition_of(9001) == 11
    assert {n for n in ids if ranks.rank_of(n) == 2} == {3, 42, 31, 4242}  # partitions 0,3,6,9


def test_a_reply_reporting_another_partition_makes_the_next_round_query_every_node():
    # Prepare: registration order says node 10 holds partition 0, but it holds 2
    grid = SimGrid({10: 2, 11: 1, 12: 0}, registered=[10, 11, 12])
    strategy = PeftFedAvg(reference_specs(HEAD_REF), min_train_nodes=3, min_available_nodes=3)
    arrays = ArrayRecord({k: Array(np.zeros_like(v.numpy())) for k, v in HEAD_REF.items()})
    # Execute: round 1 on the inferred ids; its replies report the true ones
    sent = list(strategy.configure_train(1, arrays, ConfigRecord({"lr": 0.1}), grid))
    inferred = strategy.nodes.partition_of(10)
    strategy.aggregate_train(1, grid.send_and_receive(sent))
    asked_in_round_1 = _queries(grid)
    strategy.configure_train(2, arrays, ConfigRecord({"lr": 0.1}), grid)
    # Assert: round 2 asked each node once and knows the true partition ids
    assert (inferred, asked_in_round_1) == (0, [])
    assert _queries(grid) == [10, 11, 12]
    assert [strategy.nodes.partition_of(n) for n in (10, 11, 12)] == [2, 1, 0]
