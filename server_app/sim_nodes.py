"""Partition ids of Flower's simulated SuperNodes, read from the SuperLink without a message.

Flower's simulation engine registers its N virtual SuperNodes one after the other and
gives the i-th the node-config ``partition-id=i`` (``_register_nodes`` in
``flwr.server.superlink.fleet.vce.vce_api``). The ServerApp sees each node's registration
time (``NodeInfo.registered_at``) and heartbeat interval, which only simulated nodes have
infinite (``HEARTBEAT_INTERVAL_INF``). So :class:`~server_app.sampling.NodeDirectory` can
know every simulated node's partition id at start-up instead of asking each one in a
``query`` message: at 10,000 nodes those queries took about 2 minutes, because Flower's
simulation loop matches every node's inbox against every message in flight
(``add_messages_to_queue`` × ``InMemoryLinkState.get_message_ins``: nodes × messages).

Written by hand because Flower has no API for it (``NodeInfo`` carries no node-config).
``tests/test_sim_nodes.py`` checks it against Flower's own registration; the strategy checks
every training reply's ``partition-id`` against it and, on a mismatch, the directory
queries every node as in deployment. Deployed SuperNodes heartbeat, so they are always
queried.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from flwr.common.constant import HEARTBEAT_INTERVAL_INF
from flwr.proto.node_pb2 import NodeInfo


def simulated_partitions(nodes: Iterable[NodeInfo]) -> dict[int, int] | None:
    """Node id → partition id of simulated SuperNodes, by registration order.

    ``None`` where that order does not tell: no nodes, a node that heartbeats (deployed),
    a registration time that is missing or shared by two nodes.
    """
    nodes = list(nodes)
    if not nodes or any(n.heartbeat_interval < HEARTBEAT_INTERVAL_INF for n in nodes):
        return None
    try:
        order = sorted((datetime.fromisoformat(n.registered_at), n.node_id) for n in nodes)
    except (TypeError, ValueError):  # a malformed timestamp, or naive beside aware ones
        return None
    if len({when for when, _ in order}) != len(order):
        return None
    return {node_id: pid for pid, (_, node_id) in enumerate(order)}
