"""The one reply loop: walk a round's replies, split off errors, check the rest, collect.

Training (:mod:`server_app.reply_check`), federated evaluation
(:mod:`server_app.client_eval`) and FedNCM (:mod:`server_app.ncm`) all read their replies
through :func:`walk`: each reply is either an error (the node failed), a rejection (it
did not pass the caller's check, which starts with the round's :class:`Envelope`) or an
accepted value, in arrival order. Callers decide what an error or a rejection records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flwr.app import Message, RecordDict

from .validation import check_envelope, reply_node

T = TypeVar("T")


@dataclass(frozen=True)
class Envelope:
    """Whether a reply belongs to the round: its group, its sender, its only reply."""

    server_round: int
    sent: list[Message] | None
    counts: Counter

    def reason(self, msg: Message) -> str | None:
        """Why ``msg`` does not belong to this round (``None`` if it does)."""
        return check_envelope(msg, self.server_round, self.sent, self.counts)


@dataclass(frozen=True)
class Accepted(Generic[T]):
    """A reply that passed its check: the node it is about and what the check made of it."""

    node: int
    message: Message
    value: T


@dataclass(frozen=True)
class Walked(Generic[T]):
    """All the replies of a round and the accepted ones, both in arrival order."""

    replies: list[Message]
    accepted: list[Accepted[T]]

    def silent(self, sent: list[Message]) -> set[int]:
        """The nodes sent a message in ``sent`` that no reply is about."""
        replied = {reply_node(msg, sent) for msg in self.replies}
        return {m.metadata.dst_node_id for m in sent} - replied


def walk(
    replies: Iterable[Message],
    server_round: int,
    sent: list[Message] | None,
    check: Callable[[Message, Envelope], T | str],
    *,
    on_error: Callable[[int, str], None],
    on_reject: Callable[[int, str], None],
    on_content: Callable[[RecordDict], None] | None = None,
) -> Walked[T]:
    """Check each reply; hand errors and rejections (by node) to the callbacks.

    ``check(msg, envelope)`` returns what the reply carries, or why it is unusable;
    ``on_content`` sees every reply that is not an error before it is checked (for
    counting bytes).
    """
    replies = list(replies)
    counts = Counter(m.metadata.src_node_id for m in replies if not m.has_error())
    envelope = Envelope(server_round, sent, counts)
    accepted: list[Accepted[T]] = []
    for msg in replies:
        node = reply_node(msg, sent)
        if msg.has_error():
            on_error(node, msg.error.reason)
            continue
        if on_content is not None:
            on_content(msg.content)
        result = check(msg, envelope)
        if isinstance(result, str):
            on_reject(node, result)
            continue
        accepted.append(Accepted(node, msg, result))
    return Walked(replies, accepted)
