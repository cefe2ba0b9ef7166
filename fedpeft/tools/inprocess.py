r"""The ServerApp and its ClientApps in one process, on a Grid of in-process nodes.

    .venv/bin/python -m fedpeft.tools.inprocess --num-supernodes 10 -c conf/cpu-opt.toml \\
        -c "peft.method='adapter' output.run-name='a'"

The ServerApp's ``main`` and ``client_app.app`` end to end, without the SuperLink, Ray and
their processes: each node's messages are answered in turn by the ClientApp in this
process, with a ``Context`` of its own (node ids 1..: partition id + 1). Messages cross
as Flower's protobuf bytes both ways, as on a real transport, so neither side can hold
the other's arrays. A real ``flwr run`` costs ~55 s and ~70 busy CPU-seconds before
its first round here (SuperLink, Ray, actors and the ServerApp each importing torch,
timm and peft and building the model); this costs one model build per side. The sweep
uses it for many short runs (``fedpeft-sweep --in-process``); ``tests/e2e/test_resume``
holds a run made here bit-identical to the same run on Ray actors.

Flower has no in-process Grid (its simulation runs ClientApps on Ray actors), hence
this one; what only the real plumbing does (timeouts, node failures, SuperLink
liveness) does not happen here.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.supercore.task_identity import TaskIdentity

from client_app.app import app as client_app
from fedpeft.config import app_config
from server_app.app import main as server_main

from ..protocol import NUM_PARTITIONS, PARTITION_ID

log = logging.getLogger(__name__)


def _cross(msg: Message) -> Message:
    """``msg`` after a trip through Flower's wire format, as bytes."""
    return message_from_proto(ProtoMessage.FromString(message_to_proto(msg).SerializeToString()))


class InProcessGrid:
    """``num_nodes`` nodes on partitions 0.. of ``num_nodes``, each with its own Context
    (node ids 1..: partition id + 1), answering with ``client_app.app``.
    """  # noqa: D205

    def __init__(self, run_config: dict, num_nodes: int, run_id: int = 1) -> None:
        self.contexts = {
            p + 1: Context(run_id=run_id, node_id=p + 1, state=RecordDict(),
                           run_config=run_config,
                           node_config={PARTITION_ID: p, NUM_PARTITIONS: num_nodes})
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

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
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


def run_in_process(run_config: dict, num_nodes: int, run_id: int = 1) -> InProcessGrid:
    """Run the ServerApp's ``main`` on an :class:`InProcessGrid`; return the grid."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 1  # a ServerApp's
    grid = InProcessGrid(run_config, num_nodes, run_id)
    server_main(grid, Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(),
                              run_config=run_config))  # fmt: skip
    return grid


def main(argv: list[str] | None = None) -> int:
    """Command line: one run of the app in this process (``python -m fedpeft.tools.inprocess``)."""
    parser = argparse.ArgumentParser(prog="python -m fedpeft.tools.inprocess",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--app", type=Path, default=Path.cwd(),
                        help="Flower app directory, as fedpeft-sim's (default: here)")  # fmt: skip
    parser.add_argument("--num-supernodes", type=int, default=10,
                        help="nodes (partitions) of the federation (default 10)")  # fmt: skip
    parser.add_argument("-c", "--run-config", action="append", default=[],
                        help="a preset or 'key=value ...' overrides, as fedpeft-sim's")  # fmt: skip
    args = parser.parse_args(argv)
    if args.num_supernodes < 1:
        parser.error(f"--num-supernodes {args.num_supernodes}: must be >= 1")
    # the app the sweep resolves each run's config from (fedpeft.tools.sweep.resolved_config)
    run_config = app_config(args.app.resolve(), args.run_config)  # a bad key fails here
    run_in_process(run_config, args.num_supernodes, random.getrandbits(63))  # as Flower's ids
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
