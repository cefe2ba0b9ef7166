"""What each node is sent: the global arrays at its LoRA rank, in ``comm.downlink``."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from fedpeft import wire
from fedpeft.codecs import Codec

from . import node_ranks
from .rounds import RoundStats


class Downlink:
    """Mixin for :class:`~server_app.strategy.PeftFedAvg` (its ``downlink`` codec, ``nodes``
    and Flower's record keys): the messages of a round, one per node.
    """  # noqa: D205

    downlink: Codec | None
    nodes: Any
    arrayrecord_key: str
    configrecord_key: str

    def encode_downlink(self, arrays: ArrayRecord, config: ConfigRecord) -> ArrayRecord:
        """``arrays`` as they travel to clients (``comm.downlink``), named in ``config``."""
        if self.downlink is None:
            return arrays
        config[wire.DOWNLINK_KEY] = self.downlink.name
        return wire.encode({k: v.numpy() for k, v in arrays.items()}, self.downlink)

    def downlink_messages(
        self,
        node_ids: list[int],
        arrays: ArrayRecord,
        config: ConfigRecord,
        message_type: str,
        group_id: str,
        stats: RoundStats | None = None,
    ) -> list[Message]:
        """One message per node with ``arrays`` at its rank, in ``comm.downlink``.

        Nodes of one rank share one record (HetLoRA: one per rank announced); ``stats``
        counts the bytes of each.
        """
        messages = []
        for rank, nodes in node_ranks.by_rank(node_ids, self.nodes.rank_of).items():
            plain = node_ranks.arrays_at(arrays, rank)
            travelling = self.encode_downlink(plain, config)
            record = RecordDict({self.arrayrecord_key: travelling, self.configrecord_key: config})
            messages += [Message(record, dst_node_id=node, message_type=message_type,
                                 group_id=group_id) for node in nodes]  # fmt: skip
            if stats is not None:
                stats.count_sent(travelling, len(nodes), plain if self.downlink else None)
        return messages
