"""PeftFedAvg: golden aggregation values, adversarial replies, what travels."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from server_app.strategy import PeftFedAvg
from server_app.validation import reference_specs

REF = ArrayRecord(
    {
        "head.weight": Array(np.zeros((2, 3), dtype=np.float32)),
        "head.bias": Array(np.zeros(2, dtype=np.float32)),
    }
)


def _reply(node: int, arrays: dict[str, np.ndarray], n: object, extra_metrics=None) -> Message:
    instr = Message(RecordDict({"config": ConfigRecord()}), dst_node_id=node, message_type="train")
    metrics = {"num-examples": n, "train-loss": 1.0}
    metrics.update(extra_metrics or {})
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content, reply_to=instr)


def _update(value: float) -> dict[str, np.ndarray]:
    return {
        "head.weight": np.full((2, 3), value, dtype=np.float32),
        "head.bias": np.full(2, -value, dtype=np.float32),
    }


@pytest.fixture(autouse=True)
def _task_identity():
    # Messages read the running task's identity, as inside a ServerApp.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


@pytest.fixture
def strategy() -> PeftFedAvg:
    return PeftFedAvg(reference=reference_specs(REF), min_train_nodes=1, min_available_nodes=1)


def test_weighted_mean_golden_values(strategy):
    # Prepare: weights 10, 30, 60 on values 1, 2, 4 → (10 + 60 + 240) / 100 = 3.1
    replies = [
        _reply(1, _update(1.0), 10),
        _reply(2, _update(2.0), 30),
        _reply(3, _update(4.0), 60),
    ]
    # Execute
    arrays, _metrics = strategy.aggregate_train(1, replies)
    # Assert
    np.testing.assert_allclose(arrays["head.weight"].numpy(), np.full((2, 3), 3.1), rtol=1e-6)
    np.testing.assert_allclose(arrays["head.bias"].numpy(), np.full(2, -3.1), rtol=1e-6)
    assert set(arrays) == set(REF)
    assert strategy.rounds[1].accepted == 3


def test_two_replies_golden_values(strategy):
    replies = [_reply(1, _update(0.5), 1), _reply(2, _update(-1.5), 3)]
    arrays, _ = strategy.aggregate_train(1, replies)
    # (0.5·1 − 1.5·3) / 4 = −1.0
    np.testing.assert_allclose(arrays["head.weight"].numpy(), -1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"head.weight": np.zeros((2, 3), np.float32)}, "missing"),
        ({**_update(1.0), "blocks.0.attn.qkv.weight": np.zeros((3, 3), np.float32)}, "extra"),
        (
            {"head.weight": np.zeros((3, 3), np.float32), "head.bias": np.zeros(2, np.float32)},
            "expected float32",
        ),
        (
            {"head.weight": np.zeros((2, 3), np.float64), "head.bias": np.zeros(2, np.float32)},
            "float64",
        ),
        (
            {
                "head.weight": np.full((2, 3), np.nan, np.float32),
                "head.bias": np.zeros(2, np.float32),
            },
            "NaN or Inf",
        ),
    ],
)
def test_bad_reply_is_dropped_and_round_continues(strategy, bad, reason):
    # Prepare
    replies = [_reply(1, _update(2.0), 10), _reply(7, bad, 10)]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: only the good reply is aggregated; the bad one is logged with a reason
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 2.0)
    assert 7 in strategy.rounds[1].rejected
    assert reason in strategy.rounds[1].rejected[7]


@pytest.mark.parametrize("n", [0, -5, 2.5, None])
def test_bad_weight_is_rejected(strategy, n):
    replies = [_reply(1, _update(2.0), 10), _reply(2, _update(9.0), n if n is not None else 1)]
    if n is None:  # metric missing entirely
        del replies[1].content["metrics"]["num-examples"]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 2.0)
    assert "num-examples" in strategy.rounds[1].rejected[2]


def test_error_reply_is_logged_and_skipped(strategy):
    instr = Message(RecordDict(), dst_node_id=5, message_type="train")
    err = Message(Error(code=0, reason="boom"), reply_to=instr)
    arrays, _ = strategy.aggregate_train(1, [err, _reply(1, _update(3.0), 4)])
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 3.0)
    assert strategy.rounds[1].errors == {5: "boom"}


def test_no_valid_reply_leaves_state_unchanged(strategy):
    arrays, metrics = strategy.aggregate_train(1, [_reply(1, {"x": np.zeros(1, np.float32)}, 3)])
    assert arrays is None and metrics is None


class _Grid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes


def test_configure_train_sends_only_the_trainable_set(strategy):
    msgs = list(strategy.configure_train(1, REF, ConfigRecord(), _Grid([1, 2, 3])))
    assert len(msgs) == 3
    for msg in msgs:
        assert set(msg.content["arrays"]) == set(REF)
    bigger = ArrayRecord({**{k: v for k, v in REF.items()}, "blocks.0.x": Array(np.zeros(1))})
    with pytest.raises(ValueError, match="non-trainable"):
        strategy.configure_train(2, bigger, ConfigRecord(), _Grid([1]))
