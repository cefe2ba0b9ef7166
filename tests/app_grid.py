"""A Grid whose nodes run the real ClientApp in this process: the ServerApp's ``main`` and
the ClientApp end to end, without the SuperLink, Ray and their processes.

A real ``flwr run`` costs ~70 busy CPU-seconds here (SuperLink, Ray, a Ray actor and
the ServerApp each importing torch, timm and peft and building the model); this costs
the model builds and the training. Messages cross as Flower's protobuf bytes both ways,
as on a real transport, so neither side can hold the other's arrays. What only the
real plumbing can show (SuperLink, Ray actors, processes, signals) stays in
``tests/e2e``.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.supercore.task_identity import TaskIdentity

from client_app.app import app as client_app
from server_app.app import main


def _cross(msg: Message) -> Message:
    """``msg`` after a trip through Flower's wire format, as bytes."""
    return message_from_proto(ProtoMessage.FromString(message_to_proto(msg).SerializeToString()))


class AppGrid:
    """``num_nodes`` nodes on partitions 0.. of ``num_nodes``, each with its own Context
    (node ids 1..: partition id + 1), answering with ``client_app.app``.
    """

    def __init__(self, run_config: dict, num_nodes: int) -> None:
        self.contexts = {
            p + 1: Context(run_id=1, node_id=p + 1, state=RecordDict(), run_config=run_config,
                           node_config={"partition-id": p, "num-partitions": num_nodes})
            for p in range(num_nodes)
        }  # fmt: skip
        self.sent: list[Message] = []
        self._next_id = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def get_nodes(self) -> Iterable[NodeInfo]:
        # As Flower's Grid: ids only. No registration time or infinite heartbeat, so the
        # ServerApp asks each node its partition id, as it asks deployed SuperNodes.
        return [NodeInfo(node_id=n) for n in self.contexts]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        replies = []
        for msg in messages:
            self._next_id += 1
            msg.metadata.__dict__["_message_id"] = f"m{self._next_id}"  # as a Grid's push does
            self.sent.append(msg)
            received = _cross(msg)
            try:
                reply = client_app(received, self.contexts[msg.metadata.dst_node_id])
            except Exception as exc:  # what Flower's runtime replies for a raising ClientApp
                error = Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}")
                reply = Message(error, reply_to=received)
            replies.append(_cross(reply))
        return replies


def run_in_process(run_config: dict, num_nodes: int) -> AppGrid:
    """Run the ServerApp's ``main`` on an :class:`AppGrid` of ``num_nodes``; return the grid."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # as a ServerApp's
    grid = AppGrid(run_config, num_nodes)
    main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                       run_config=run_config))  # fmt: skip
    return grid
