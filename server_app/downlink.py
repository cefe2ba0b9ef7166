"""The sending steps: the round's config, then one message per node in ``comm.downlink``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from fedpeft import protocol, wire
from fedpeft.codecs import Codec

from . import node_ranks
from .rounds import RoundStats, Sent
from .sampling import NodeDirectory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Configure:
    """The config a training round sends: its number and its learning rate.

    ``lr_at`` is ``train.lr-schedule`` (``None``: the ``lr`` of the train config, if any).
    """

    lr_at: Callable[[int], float] | None = None

    def __call__(self, server_round: int, config: ConfigRecord, stats: RoundStats) -> ConfigRecord:
        """``config`` with the round and its lr; the lr is recorded in ``stats``."""
        config[protocol.SERVER_ROUND] = server_round
        if self.lr_at is not None:
            config[protocol.LR] = float(self.lr_at(server_round))
        if protocol.LR in config:
            stats.lr = float(config[protocol.LR])  # type: ignore[arg-type]
        return config


@dataclass(frozen=True)
class Send:
    """What each node is sent: the global arrays at its LoRA rank, in ``comm.downlink``.

    ``codec`` is ``None`` for fp32 (the null codec); ``reference`` the keys that may be
    sent (nothing but the trainable set ever is).
    """

    nodes: NodeDirectory
    codec: Codec | None = None
    reference: frozenset[str] | None = None

    def refuse_extra(self, arrays: ArrayRecord) -> None:
        """Raise ``ValueError`` if ``arrays`` holds a key outside the trainable set."""
        extra = sorted(set(arrays) - self.reference) if self.reference is not None else []
        if extra:  # never send anything but the trainable set
            raise ValueError(f"refusing to send non-trainable arrays {extra[:5]}")

    def encode(self, arrays: ArrayRecord, config: ConfigRecord) -> ArrayRecord:
        """``arrays`` as they travel to clients (``comm.downlink``), named in ``config``."""
        if self.codec is None:
            return arrays
        config[wire.DOWNLINK_KEY] = self.codec.name
        return wire.encode({k: v.numpy() for k, v in arrays.items()}, self.codec)

    def __call__(
        self,
        node_ids: list[int],
        arrays: ArrayRecord,
        config: ConfigRecord,
        message_type: str,
        server_round: int,
        stats: RoundStats | None = None,
    ) -> Sent:
        """One message per node with ``arrays`` at its rank, and the arrays in fp32.

        Nodes of one rank share one record (HetLoRA: one per rank announced); ``stats``
        counts the bytes of each.
        """
        messages = []
        for rank, nodes in node_ranks.by_rank(node_ids, self.nodes.rank_of).items():
            plain = node_ranks.arrays_at(arrays, rank)
            travelling = self.encode(plain, config)
            record = RecordDict({protocol.ARRAYS: travelling, protocol.CONFIG: config})
            messages += [Message(record, dst_node_id=node, message_type=message_type,
                                 group_id=str(server_round)) for node in nodes]  # fmt: skip
            if stats is not None:
                stats.count_sent(travelling, len(nodes), plain if self.codec else None)
        return Sent(messages, {k: v.numpy() for k, v in arrays.items()})
