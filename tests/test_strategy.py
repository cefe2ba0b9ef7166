"""PeftFedAvg: golden aggregation values, adversarial replies, what travels."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, RecordDict

from server_app.strategy import PeftFedAvg
from server_app.validation import Limits, reference_specs
from tests.fakes import HEAD_REF, FakeGrid, head_update, reply

REF = HEAD_REF
_update = head_update


def _strategy(**kwargs) -> PeftFedAvg:
    return PeftFedAvg(
        reference=reference_specs(REF), min_train_nodes=1, min_available_nodes=1, **kwargs
    )


def _sent(strategy: PeftFedAvg, nodes: list[int], server_round: int = 1) -> list[Message]:
    """Configure a round on a fake grid whose nodes have partition id = node id."""
    grid = FakeGrid({n: n for n in nodes}, {})
    messages = list(strategy.configure_train(server_round, REF, ConfigRecord(), grid))
    grid.send_and_receive([])  # nothing yet
    for i, msg in enumerate(messages):  # give them ids, as pushing them would
        msg.metadata.__dict__["_message_id"] = f"id{server_round}-{i}"
    return messages


def _replies(strategy, specs, server_round=1):
    """specs: [(node, arrays, n)] → replies to the messages sent to those nodes."""
    by_node = {m.metadata.dst_node_id: m for m in _sent(strategy, [s[0] for s in specs])}
    return [reply(by_node[node], arrays, n) for node, arrays, n in specs]


def test_weighted_mean_golden_values():
    # Prepare: weights 10, 30, 60 on values 1, 2, 4 → (10 + 60 + 240) / 100 = 3.1
    strategy = _strategy()
    replies = _replies(
        strategy, [(3, _update(4.0), 60), (1, _update(1.0), 10), (2, _update(2.0), 30)]
    )
    # Execute
    arrays, _metrics = strategy.aggregate_train(1, replies)
    # Assert
    np.testing.assert_allclose(arrays["head.weight"].numpy(), np.full((2, 3), 3.1), rtol=1e-6)
    np.testing.assert_allclose(arrays["head.bias"].numpy(), np.full(2, -3.1), rtol=1e-6)
    assert set(arrays) == set(REF)
    assert strategy.rounds[1].accepted == 3
    assert strategy.rounds[1].weights == {"1": 10, "2": 30, "3": 60}  # in partition order
    assert list(strategy.rounds[1].weights) == ["1", "2", "3"]


def test_two_replies_golden_values():
    strategy = _strategy()
    replies = _replies(strategy, [(1, _update(0.5), 1), (2, _update(-1.5), 3)])
    arrays, _ = strategy.aggregate_train(1, replies)
    # (0.5·1 − 1.5·3) / 4 = −1.0
    np.testing.assert_allclose(arrays["head.weight"].numpy(), -1.0, rtol=1e-6)


def test_arrival_order_does_not_change_a_bit():
    # Prepare: values whose float sum depends on the order of summation
    values = [(1, 1e8, 1), (2, -1e8, 1), (3, 1.0, 1), (4, 3.3, 7)]
    outs = []
    for order in (values, values[::-1], values[1:] + values[:1]):
        strategy = _strategy()
        replies = _replies(strategy, [(n, _update(v), w) for n, v, w in order])
        # Execute
        arrays, _ = strategy.aggregate_train(1, replies)
        outs.append(arrays["head.weight"].numpy().tobytes())
    # Assert
    assert outs[0] == outs[1] == outs[2]


BAD = [
    ({"head.weight": np.zeros((2, 3), np.float32)}, 10, "missing"),
    ({**_update(1.0), "blocks.0.attn.qkv.weight": np.zeros((3, 3), np.float32)}, 10, "extra"),
    (
        {"head.weight": np.zeros((3, 3), np.float32), "head.bias": np.zeros(2, np.float32)},
        10,
        "expected float32",
    ),
    (
        {"head.weight": np.zeros((2, 3), np.float64), "head.bias": np.zeros(2, np.float32)},
        10,
        "float64",
    ),
    (
        {"head.weight": np.full((2, 3), np.nan, np.float32), "head.bias": np.zeros(2, np.float32)},
        10,
        "NaN or Inf",
    ),
    (
        {"head.weight": np.full((2, 3), np.inf, np.float32), "head.bias": np.zeros(2, np.float32)},
        10,
        "NaN or Inf",
    ),
    (_update(1.0), 0, "not a positive integer"),
    (_update(1.0), -5, "not a positive integer"),
    (_update(1.0), 2.5, "not a positive integer"),
    (_update(1.0), 10**9, "implausibly large"),
    (_update(50.0), 10, "update norm"),
    (
        {"head.weight": np.zeros((2, 3), np.float32), "head.bias": np.zeros(2000, np.float32)},
        10,
        "over the budget",
    ),
]


@pytest.mark.parametrize(("bad", "n", "reason"), BAD)
def test_bad_reply_is_dropped_and_round_continues(bad, n, reason):
    # Prepare
    strategy = _strategy(
        limits=Limits(max_payload_bytes=1000, max_num_examples=1000, max_update_norm=10.0)
    )
    replies = _replies(strategy, [(1, _update(2.0), 10), (7, bad, n)])
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: only the good reply is aggregated; the bad one is logged with a reason
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 2.0)
    assert reason in strategy.rounds[1].rejected[7]
    assert strategy.rounds[1].accepted == 1


def test_missing_num_examples_is_rejected():
    strategy = _strategy()
    replies = _replies(strategy, [(1, _update(2.0), 10), (2, _update(9.0), 1)])
    del replies[1].content["metrics"]["num-examples"]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 2.0)
    assert "num-examples=None" in strategy.rounds[1].rejected[2]


def test_same_node_twice_is_rejected():
    # Prepare: node 2 answers twice (a Grid never delivers this; a fake one can)
    strategy = _strategy()
    replies = _replies(strategy, [(1, _update(2.0), 10), (2, _update(9.0), 10)])
    replies.append(reply(strategy.sent[1].messages[1], _update(9.0), 10))
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 2.0)
    assert "replied 2 times" in strategy.rounds[1].rejected[2]


def test_reply_for_another_round_is_rejected():
    # Prepare: round 1's message answered, but delivered while round 2 is aggregated
    strategy = _strategy()
    old = _sent(strategy, [1, 2], server_round=1)
    stale = reply(old[1], _update(9.0), 10)
    fresh = {m.metadata.dst_node_id: m for m in _sent(strategy, [1, 2], server_round=2)}
    # Execute
    arrays, _ = strategy.aggregate_train(2, [reply(fresh[1], _update(2.0), 10), stale])
    # Assert
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 2.0)
    assert "reply for round '1', expected round 2" in strategy.rounds[2].rejected[2]


def test_reply_to_a_message_not_sent_is_rejected():
    strategy = _strategy()
    replies = _replies(strategy, [(1, _update(2.0), 10), (2, _update(9.0), 10)])
    forged = Message(RecordDict(), dst_node_id=2, message_type="train", group_id="1")
    forged.metadata.__dict__["_message_id"] = "forged"
    replies[1] = reply(forged, _update(9.0), 10)
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 2.0)
    assert "not sent this round" in strategy.rounds[1].rejected[2]


def test_error_reply_is_logged_and_skipped():
    strategy = _strategy()
    replies = _replies(strategy, [(1, _update(3.0), 4), (5, _update(0.0), 1)])
    replies[1] = Message(Error(code=0, reason="boom"), reply_to=strategy.sent[1].messages[1])
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 3.0)
    assert strategy.rounds[1].errors == {5: "boom"}


def test_sampled_nodes_that_never_reply_are_named(caplog):
    # Prepare: 4 nodes sampled; node 5 errors, nodes 3 and 12 stay silent (timeout)
    strategy = _strategy()
    sent = {m.metadata.dst_node_id: m for m in _sent(strategy, [1, 3, 5, 12])}
    replies = [reply(sent[1], _update(3.0), 4),
               Message(Error(code=0, reason="boom"), reply_to=sent[5])]  # fmt: skip
    # Execute
    with caplog.at_level("WARNING"):
        arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: the silent ones in partition order; the failed one is an error, not silent
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 3.0)
    assert strategy.rounds[1].silent == [3, 12]
    assert "no reply from partitions ['3', '12']" in caplog.text


def test_too_few_valid_replies_fail_the_round():
    # Prepare
    strategy = _strategy(min_replies=2)
    replies = _replies(strategy, [(1, _update(3.0), 4), (2, {"x": np.zeros(1, np.float32)}, 3)])
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # Assert
    assert arrays is None and metrics is None
    assert "fewer than server.min-replies" in strategy.rounds[1].failure


def test_configure_train_sends_only_the_trainable_set():
    strategy = _strategy()
    msgs = _sent(strategy, [1, 2, 3])
    assert len(msgs) == 3
    for msg in msgs:
        assert set(msg.content["arrays"]) == set(REF)
        assert msg.metadata.group_id == "1"
    bigger = ArrayRecord({**{k: v for k, v in REF.items()}, "blocks.0.x": Array(np.zeros(1))})
    with pytest.raises(ValueError, match="non-trainable"):
        strategy.configure_train(2, bigger, ConfigRecord(), FakeGrid({1: 1}, {}))


def test_errors_the_superlink_writes_for_unavailable_nodes_name_those_nodes():
    # Prepare: nodes 3 and 5 went offline; the SuperLink answers for each of them with an
    # error of its own making (src_node_id: the SuperLink's id), as Flower's link state does
    from flwr.server.superlink.linkstate.utils import (
        create_message_error_unavailable_res_message as unavailable,
    )

    strategy = _strategy()
    sent = {m.metadata.dst_node_id: m for m in _sent(strategy, [1, 3, 5])}
    replies = [reply(sent[1], _update(3.0), 4),
               *(unavailable(sent[n].metadata, "node_unavail") for n in (3, 5))]  # fmt: skip
    # Execute
    strategy.aggregate_train(1, replies)
    # Assert: one error per unavailable node, under its own id; neither counted as silent
    stats = strategy.rounds[1]
    assert sorted(stats.errors) == [3, 5] and stats.silent == []
    assert {replies[1].metadata.src_node_id, replies[2].metadata.src_node_id} == {1}
