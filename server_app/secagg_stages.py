"""SecAgg+'s four exchanges as Message API round trips, each reply checked.

:func:`exchange` sends one stage's messages (``train.<action>``, the round's group id)
with :meth:`Grid.send_and_receive` and reads the replies through the one reply loop
(:func:`server_app.replies.walk`): envelope first, then the stage's own check of the
``secagg`` record. A node whose reply is an error, is refused or never comes is out from
that stage on (recorded in the round's stats with the stage's name); the caller decides
whether the protocol survives it. Bytes each way are counted per stage (``secagg_bytes``)
and in the round's totals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedpeft import protocol
from fedpeft.arrays import wire_bytes
from fedpeft.secagg import SecAggParams

from .replies import Envelope, walk
from .rounds import RoundStats
from .sampling import NodeDirectory

log = logging.getLogger(__name__)

# (node, reply content) → the reply's value, or why it is refused (a str)
Check = Callable[[int, RecordDict], Any]


def array_bytes(content: RecordDict) -> int:
    """Serialised bytes of a message's ArrayRecords, as Flower moves them."""
    return sum(wire_bytes(r) for r in content.array_records.values())


def content_bytes(content: RecordDict) -> int:
    """Serialised bytes of a message's ArrayRecords and ConfigRecords."""
    return array_bytes(content) + sum(len(r.deflate()) for r in content.config_records.values())


@dataclass(frozen=True)
class Stage:
    """One stage: its name (``protocol.SECAGG_STAGES``), the round and where counts go."""

    name: str
    server_round: int
    stats: RoundStats
    nodes: NodeDirectory

    @property
    def message_type(self) -> str:
        """``train.<action>`` of this stage."""
        return f"{protocol.TRAIN}.{protocol.SECAGG_ACTIONS[self.name]}"

    def message(self, node: int, values: Mapping[str, Any], base: RecordDict | None = None
                ) -> Message:  # fmt: skip
        """A message to ``node`` with the stage's ``secagg`` record (and ``base``'s records)."""
        content = RecordDict(dict(base.items()) if base is not None else {})
        content[protocol.SECAGG] = ConfigRecord(dict(values))
        return Message(content, dst_node_id=node, message_type=self.message_type,
                       group_id=str(self.server_round))  # fmt: skip

    def _out(self, table: dict[int, str], node: int, why: str) -> None:
        table[node] = f"secagg {self.name}: {why}"
        log.warning("round %d: node %d (partition %s) out at secagg %s: %s",
                    self.server_round, node, self.nodes.label(node), self.name, why)  # fmt: skip

    def exchange(self, grid: Grid, messages: list[Message], timeout: float, check: Check,
                 record_out: bool = True) -> dict[int, Any]:  # fmt: skip
        """Node → checked value of each usable reply.

        ``record_out``: errors and refusals go into the round's stats (else only logged:
        a node after the masked stage is in the sum whatever it does next).
        """
        down = sum(content_bytes(m.content) for m in messages)
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        up = sum(content_bytes(m.content) for m in replies if not m.has_error())
        # the global arrays of the masked stage: counted when the round's send built them
        self.stats.bytes_down += down - sum(array_bytes(m.content) for m in messages)
        self.stats.bytes_up += up
        self.stats.secagg_bytes[self.name] = down + up
        errors = self.stats.errors if record_out else {}
        rejected = self.stats.rejected if record_out else {}

        def checked(msg: Message, envelope: Envelope) -> Any:
            return envelope.reason(msg) or check(msg.metadata.src_node_id, msg.content)

        walked = walk(replies, self.server_round, messages, checked,
                      on_error=lambda n, why: self._out(errors, n, why),
                      on_reject=lambda n, why: self._out(rejected, n, why))  # fmt: skip
        return {a.node: a.value for a in walked.accepted}


def _record(content: RecordDict, kind: type = ConfigRecord) -> Any:
    record = content.get(protocol.SECAGG)
    return record if isinstance(record, kind) else None


def check_public_keys(node: int, content: RecordDict) -> tuple[bytes, bytes] | str:
    """Setup reply: ``(pk1, pk2)``."""
    record = _record(content)
    keys = (record.get(protocol.SECAGG_PK1), record.get(protocol.SECAGG_PK2)) if record else ()
    if len(keys) != 2 or not all(isinstance(k, bytes) and k for k in keys):
        return f"no {protocol.SECAGG_PK1} / {protocol.SECAGG_PK2} bytes in its setup reply"
    return keys  # type: ignore[return-value]


def _pairs(record: ConfigRecord | None, ids: str, values: str) -> dict[int, bytes] | str:
    if record is None:
        return f"no {protocol.SECAGG!r} record"
    nodes, items = record.get(ids, []), record.get(values, [])
    if not isinstance(nodes, list) or not isinstance(items, list) or len(nodes) != len(items):
        return f"{ids} and {values} are not lists of one length"
    if not all(protocol.is_int(n) for n in nodes) or not all(isinstance(v, bytes) for v in items):
        return f"{ids} must be node ids and {values} bytes"
    if len(set(nodes)) != len(nodes):
        return f"{ids}: a node id repeats"
    return dict(zip(nodes, items, strict=True))


def check_ciphertexts(neighbours: Mapping[int, list[int]]) -> Check:
    """Share-keys reply: destination → ciphertext, each destination another neighbour."""

    def check(node: int, content: RecordDict) -> dict[int, bytes] | str:
        pairs = _pairs(_record(content), protocol.SECAGG_DESTINATIONS,
                       protocol.SECAGG_CIPHERTEXTS)  # fmt: skip
        if isinstance(pairs, str):
            return pairs
        strangers = sorted((set(pairs) - set(neighbours[node])) | ({node} & set(pairs)))
        return f"sealed shares for non-neighbours {strangers}" if strangers else pairs

    return check


def check_masked(params: SecAggParams, size: int) -> Check:
    """Masked reply: one vector of ``size + 1`` entries of ``params.dtype`` below 2^m."""

    def check(node: int, content: RecordDict) -> np.ndarray | str:
        record = _record(content, ArrayRecord)
        if record is None or list(record) != [protocol.SECAGG_MASKED]:
            return f"expected one array {protocol.SECAGG_MASKED!r} in {protocol.SECAGG!r}"
        if len(content) != 1:
            return f"carries more than its masked vector: {sorted(content)}"
        array = record[protocol.SECAGG_MASKED]
        if array.dtype != str(params.dtype) or tuple(array.shape) != (size + 1,):
            return (f"masked vector of {array.dtype} {tuple(array.shape)}, expected "
                    f"{params.dtype} ({size + 1},)")  # fmt: skip
        try:
            vector = array.numpy()
        except (ValueError, TypeError) as exc:
            return f"masked vector does not decode: {exc}"
        if vector.size and int(vector.max()) >= params.modulus:
            return f"masked vector has values >= 2**{params.modulus_bits}"
        return vector

    return check


def check_shares(node: int, content: RecordDict) -> tuple[list[int], list[bytes]] | str:
    """Unmask reply: owners and their shares."""
    pairs = _pairs(_record(content), protocol.SECAGG_OWNERS, protocol.SECAGG_SHARES)
    if isinstance(pairs, str):
        return pairs
    return list(pairs), list(pairs.values())
