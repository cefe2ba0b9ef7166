"""Federated evaluation on the clients' held-out images: seeded sampling, checked replies,
the weighted mean recorded beside the server's accuracy.

The real runs: ``tests/e2e/test_deploy.py``'s first run (FedSA-LoRA, personalised)."""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from server_app.strategy import PeftFedAvg
from server_app.validation import Limits, reference_specs
from tests.fakes import HEAD_REF, FakeGrid

PARTITIONS = {11: 4, 12: 0, 13: 2, 14: 1}  # node id → partition id


def _strategy(fraction: float = 1.0) -> PeftFedAvg:
    return PeftFedAvg(reference_specs(HEAD_REF), seed=5, fraction_train=fraction,
                      fraction_evaluate=fraction, min_train_nodes=1, min_evaluate_nodes=1,
                      min_available_nodes=1, limits=Limits(max_num_examples=1000))  # fmt: skip


def _answer(msg: Message, n: object, acc: object, loss: object = 0.5) -> Message:
    metrics = MetricRecord({"num-examples": n, "eval-acc": acc, "eval-loss": loss})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _evaluate(strategy: PeftFedAvg, grid: FakeGrid, server_round: int = 1) -> list[Message]:
    messages = list(strategy.configure_evaluate(server_round, HEAD_REF, ConfigRecord(), grid))
    for i, msg in enumerate(messages):  # give them ids, as pushing them would
        msg.metadata.__dict__["_message_id"] = f"e{server_round}-{i}"
    return messages


def test_the_evaluating_clients_are_the_rounds_trained_ones_when_the_fractions_match():
    # Prepare
    strategy, grid = _strategy(0.5), FakeGrid(PARTITIONS, {})
    # Execute
    trained = list(strategy.configure_train(3, HEAD_REF, ConfigRecord(), grid))
    evaluating = _evaluate(strategy, grid, 3)
    # Assert: the same seeded sample (seed, round), sent as round 3's evaluate messages
    assert {m.metadata.dst_node_id for m in evaluating} == {m.metadata.dst_node_id
                                                            for m in trained}  # fmt: skip
    assert len(evaluating) == 2
    assert all(m.metadata.message_type == "evaluate" and m.metadata.group_id == "3"
               for m in evaluating)  # fmt: skip
    assert evaluating[0].content["config"]["server-round"] == 3


def test_the_weighted_mean_in_partition_order_is_recorded():
    # Prepare: 10 images at 0.9, 30 at 0.5, 60 at 0.2 → (9 + 15 + 12) / 100 = 0.36
    strategy, grid = _strategy(), FakeGrid(PARTITIONS, {})
    sent = {m.metadata.dst_node_id: m for m in _evaluate(strategy, grid)}
    replies = [_answer(sent[11], 60, 0.2, 1.0), _answer(sent[12], 10, 0.9, 0.1),
               _answer(sent[13], 30, 0.5, 0.5)]  # fmt: skip
    # Execute
    out = strategy.aggregate_evaluate(1, replies)
    # Assert
    assert out["eval-acc"] == pytest.approx(0.36)
    fields = strategy.rounds[1].record_fields(str)
    assert fields["client_accuracy"] == pytest.approx(0.36)
    assert fields["client_loss"] == pytest.approx((0.1 * 10 + 0.5 * 30 + 1.0 * 60) / 100)
    assert fields["clients_evaluated"] == 3 and fields["eval_rejections"] == {}


@pytest.mark.parametrize(
    ("n", "acc", "loss", "reason"),
    [
        (0, 0.5, 0.5, "num-examples=0 is not a positive integer"),
        ([10], 0.5, 0.5, "num-examples=[10]"),
        (5000, 0.5, 0.5, "num-examples=5000 is implausibly large"),
        (10, 1.5, 0.5, "eval-acc=1.5 is not an accuracy"),
        (10, math.nan, 0.5, "eval-acc=nan"),
        (10, [0.5], 0.5, "eval-acc=[0.5]"),
        (10, 0.5, -1.0, "eval-loss=-1.0 is not a loss"),
    ],
)
def test_a_bad_evaluation_is_dropped_with_its_reason_and_the_rest_count(n, acc, loss, reason):
    # Prepare: one honest client (0.8 on 20 images) and one bad reply
    strategy, grid = _strategy(), FakeGrid(PARTITIONS, {})
    sent = {m.metadata.dst_node_id: m for m in _evaluate(strategy, grid)}
    replies = [_answer(sent[12], 20, 0.8), _answer(sent[13], n, acc, loss)]
    # Execute
    out = strategy.aggregate_evaluate(1, replies)
    # Assert: the honest one is the mean; the bad one is recorded under its partition
    assert out["eval-acc"] == pytest.approx(0.8)
    stats = strategy.rounds[1]
    assert stats.client_eval["clients_evaluated"] == 1
    assert reason in stats.eval_rejected["2"]


def test_evaluations_from_outside_the_round_are_dropped():
    # Prepare: a reply for another round, a node asked twice over, arrays in an evaluation
    strategy, grid = _strategy(), FakeGrid(PARTITIONS, {})
    sent = {m.metadata.dst_node_id: m for m in _evaluate(strategy, grid)}
    stale = _answer(sent[11], 10, 0.1)
    stale.metadata.__dict__["_group_id"] = "0"
    with_arrays = _answer(sent[14], 10, 0.1)
    with_arrays.content["arrays"] = HEAD_REF
    replies = [stale, _answer(sent[12], 10, 0.1), _answer(sent[12], 10, 0.1), with_arrays,
               _answer(sent[13], 10, 0.7)]  # fmt: skip
    # Execute
    out = strategy.aggregate_evaluate(1, replies)
    # Assert: only partition 2's stands
    rejected = strategy.rounds[1].eval_rejected
    assert out["eval-acc"] == pytest.approx(0.7)
    assert "expected round 1" in rejected["4"] and "replied 2 times" in rejected["0"]
    assert "no arrays" in rejected["1"]


def test_no_valid_evaluation_records_nothing():
    strategy, grid = _strategy(), FakeGrid(PARTITIONS, {})
    sent = _evaluate(strategy, grid)
    assert strategy.aggregate_evaluate(1, [_answer(sent[0], 0, 0.5)]) is None
    assert strategy.rounds[1].record_fields(str).get("client_accuracy") is None
