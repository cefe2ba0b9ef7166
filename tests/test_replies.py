"""The one reply loop: errors, rejections and accepted replies split, in arrival order."""

from __future__ import annotations

from flwr.app import Error, Message, MetricRecord, RecordDict

from fedpeft import protocol
from server_app.replies import walk


def _sent(nodes: list[int], server_round: int = 1) -> list[Message]:
    """Messages as the SuperLink has them: each with its own message id."""
    out = [Message(RecordDict(), dst_node_id=n, message_type=protocol.TRAIN,
                   group_id=str(server_round)) for n in nodes]  # fmt: skip
    for msg in out:
        msg.metadata.__dict__["_message_id"] = f"id{server_round}-{msg.metadata.dst_node_id}"
    return out


def _reply(msg: Message, value: int) -> Message:
    content = RecordDict({protocol.METRICS: MetricRecord({"v": value})})
    return Message(content, reply_to=msg)


def test_walk_splits_errors_rejections_and_accepted_replies():
    # Prepare: node 1 replies well, node 2 fails, node 3 sends a bad value, node 4 is silent
    sent = _sent([1, 2, 3, 4])
    replies = [_reply(sent[0], 5), Message(Error(code=0, reason="boom"), reply_to=sent[1]),
               _reply(sent[2], -1)]  # fmt: skip
    errors, rejected, seen = {}, {}, []

    def check(msg, envelope):
        value = msg.content[protocol.METRICS]["v"]
        return envelope.reason(msg) or (value if value > 0 else f"v={value}")

    # Execute
    walked = walk(replies, 1, sent, check, on_error=errors.__setitem__,
                  on_reject=rejected.__setitem__, on_content=seen.append)  # fmt: skip
    # Assert
    assert [(a.node, a.value) for a in walked.accepted] == [(1, 5)]
    assert errors == {2: "boom"} and rejected == {3: "v=-1"}
    assert len(seen) == 2  # every reply that is not an error
    assert walked.silent(sent) == {4}


def test_walk_rejects_a_reply_from_another_round_by_its_envelope():
    sent = _sent([1])
    late = _reply(_sent([1], server_round=0)[0], 5)
    rejected = {}
    walked = walk([late], 1, sent, lambda msg, env: env.reason(msg) or 1,
                  on_error=lambda n, r: None, on_reject=rejected.__setitem__)  # fmt: skip
    assert walked.accepted == [] and "expected round 1" in rejected[1]
