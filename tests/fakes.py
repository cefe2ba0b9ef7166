"""A fake Grid for strategy tests: in-process nodes that answer query and train messages."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611

from server_app.checkpoint import Checkpointer
from server_app.recorder import RunRecorder

# The trainable set of the strategy tests: a 2×3 head and its bias.
HEAD_REF = ArrayRecord(
    {
        "head.weight": Array(np.zeros((2, 3), dtype=np.float32)),
        "head.bias": Array(np.zeros(2, dtype=np.float32)),
    }
)


def head_update(value: float) -> dict[str, np.ndarray]:
    """Head arrays filled with ±``value`` (8 entries: L2 norm = value · √8)."""
    return {
        "head.weight": np.full((2, 3), value, dtype=np.float32),
        "head.bias": np.full(2, -value, dtype=np.float32),
    }


# node id → (sent arrays, round) → (arrays, num-examples) or None for no reply
Behaviour = Callable[[dict[str, np.ndarray], int], tuple[dict[str, np.ndarray], int] | None]


def reply(instr: Message, arrays: dict[str, np.ndarray], n: object) -> Message:
    """A train reply to ``instr`` carrying ``arrays`` and ``num-examples`` ``n``."""
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": n, "train-loss": 1.0}),
        }
    )
    return Message(content, reply_to=instr)


class FakeGrid:
    """Nodes ``{node id: partition id}`` (``None``: a node on its own image folder, which
    tells none); ``behaviour[node]`` makes its train replies.
    """

    def __init__(
        self,
        partitions: dict[int, int | None],
        behaviour: dict[int, Behaviour],
        announce: dict[int, dict[str, int]] | None = None,
        public_keys: dict[int, bytes] | None = None,
    ) -> None:
        self.partitions = partitions
        self.behaviour = behaviour
        self.announce = announce or {}  # node id → more of its query reply (lora-rank)
        self.public_keys = public_keys or {}  # node id → its authenticated key (PEM)
        self.sent: list[Message] = []
        self._next_id = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.partitions)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [NodeInfo(node_id=n, public_key=self.public_keys.get(n, b""))
                for n in self.partitions]  # fmt: skip

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        out = []
        for msg in messages:
            self._next_id += 1
            msg.metadata.__dict__["_message_id"] = f"m{self._next_id}"  # as a Grid's push does
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            if msg.metadata.message_type == "query":
                told = {} if self.partitions[node] is None else {  # None: a folder node
                    "partition-id": self.partitions[node]}  # fmt: skip
                pid = MetricRecord({**told, **self.announce.get(node, {})})
                out.append(Message(RecordDict({"node": pid}), reply_to=msg))
                continue
            sent = {k: v.numpy() for k, v in msg.content["arrays"].items()}
            server_round = int(msg.content["config"]["server-round"])
            made = self.behaviour[node](sent, server_round)
            if made is not None:
                out.append(reply(msg, *made))
        return out


class CheckpointedRecorder(RunRecorder):
    """The record and checkpoint steps of a round's close, one after the other."""

    def __init__(self, out_dir, run, num_classes, fingerprint, output=None):
        super().__init__(out_dir, run, num_classes, output)
        self.checkpointer = Checkpointer(out_dir, fingerprint)

    def round_end(self, end):
        super().round_end(end)
        self.checkpointer.save(end, self.rows, self.best)
