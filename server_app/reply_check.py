"""The checking step of a training round: each reply checked, the usable ones kept.

Every reply goes through the one reply loop (:func:`server_app.replies.walk`): its
envelope, then :func:`~server_app.validation.check_reply` (keys, decoded shapes and
dtypes, finiteness, weight, payload and update norm) against the tensors it carries this
round (:class:`~server_app.uplink_keys.UplinkKeys`) at the node's LoRA rank
(:mod:`server_app.node_ranks`). A reply at a smaller rank is zero-padded to the full rank.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flwr.app import Message

from fedpeft import protocol
from fedpeft.aggregation import Update
from fedpeft.arrays import Arrays
from fedpeft.codecs import Codec

from . import node_ranks
from .replies import Envelope, Walked, walk
from .rounds import RoundStats, Sent
from .sampling import NodeDirectory
from .uplink_keys import UplinkKeys
from .validation import Checked, Limits, TensorSpec, check_reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """An accepted training reply: its update at full rank and its update norm."""

    update: Update
    message: Message
    norm: float | None


def reject(server_round: int, stats: RoundStats, nodes: NodeDirectory, node: int, reason: str
           ) -> None:  # fmt: skip
    """Drop ``node``'s reply this round: recorded and logged with its partition."""
    stats.rejected[node] = reason
    log.warning("round %d: rejected the reply of node %d (partition %s): %s",
                server_round, node, nodes.label(node), reason)  # fmt: skip


@dataclass(frozen=True)
class CheckReplies:
    """Checks a training round's replies against what was sent (``Sent``) and the limits.

    ``uplink`` is ``comm.uplink`` (``None``: fp32 weights); ``carried`` the tensors a
    reply carries each round.
    """

    nodes: NodeDirectory
    carried: UplinkKeys
    limits: Limits
    uplink: Codec | None = None

    def __call__(
        self, server_round: int, replies: list[Message], sent: Sent | None, stats: RoundStats
    ) -> Walked[Candidate]:
        """The round's replies and, in arrival order, the accepted ones as candidates."""
        reference = self.carried.of(server_round)
        sent_up = {k: sent.arrays[k] for k in reference} if sent else None

        def failed(node: int, reason: str) -> None:
            stats.errors[node] = reason
            log.warning("round %d: node %d (partition %s) failed: %s", server_round, node,
                        self.nodes.label(node), reason)  # fmt: skip

        def check(msg: Message, envelope: Envelope) -> Candidate | str:
            result = self.check(msg, envelope, reference, sent_up)
            if isinstance(result, str):
                return result
            checked, arrays = result
            if self.uplink is not None:  # encoded bytes against the same reply in fp32
                stats.count_encoded(msg.content, checked.arrays)
            node = msg.metadata.src_node_id
            update = Update(arrays, checked.weight, node, self.nodes.partition_of(node))
            return Candidate(update, msg, checked.norm)

        return walk(replies, server_round, sent.messages if sent else None, check,
                    on_error=failed, on_content=stats.count_received,
                    on_reject=lambda node, why: reject(server_round, stats, self.nodes, node,
                                                       why))  # fmt: skip

    def check(self, msg: Message, envelope: Envelope, reference: dict[str, TensorSpec],
              sent_up: Arrays | None) -> tuple[Checked, Arrays] | str:  # fmt: skip
        """The checked reply and its arrays at full rank, or why it is rejected.

        A node that announced a smaller LoRA rank is checked against its own shapes and
        the arrays it was sent; its arrays are then zero-padded in the update.
        """
        rank = self.nodes.rank_of(msg.metadata.src_node_id)
        result = envelope.reason(msg) or check_reply(
            msg.content, node_ranks.specs_at(reference, rank), protocol.NUM_EXAMPLES,
            self.limits, node_ranks.sent_at(sent_up, rank), self.uplink,
        )  # fmt: skip
        if isinstance(result, str):
            return f"{result} (its announced {protocol.LORA_RANK} is {rank})" if rank else result
        arrays = node_ranks.padded(result.arrays, sent_up, rank)
        return arrays if isinstance(arrays, str) else (result, arrays)
