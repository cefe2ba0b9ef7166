"""Faulty clients and drop-outs in real simulations: the run completes, weighting is right."""

from __future__ import annotations

import pytest

from fedpeft.faults import FaultConfig, drops_out
from tests.e2e.helpers import run_app

SEED = 42  # pyproject's default seed
# 6 clients, all sampled, 3 rounds; head tuning converges within these rounds, so
# losing two clients' data changes little (the baseline is the same run, all honest).
SETUP = ("server.num-rounds=3 server.min-train-nodes=6 peft.method='head' peft.head.lr=0.05 "
         "train.epochs=2")  # fmt: skip


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    code, out, metrics = run_app(tmp_path_factory.mktemp("honest"), SETUP, supernodes=6)
    assert code == 0, out[-4000:]
    return metrics


def test_raising_and_nan_clients_cost_under_two_points(tmp_path, honest):
    # Execute: partition 0 raises mid-training every round, partition 1 returns NaN
    code, out, faulty = run_app(tmp_path, SETUP + " fault.modes='0:raise,1:nan'", supernodes=6)
    # Assert
    assert code == 0, out[-4000:]
    for row in faulty["rounds"][1:]:
        assert row["accepted"] == 4 and not row["failed_round"]
        assert "raises in training" in row["errors"]["0"]
        assert "NaN" in row["rejections"]["1"]
    base, got = honest["rounds"][-1]["accuracy"], faulty["rounds"][-1]["accuracy"]
    assert abs(got - base) <= 0.02, (base, got)


def test_thirty_percent_dropouts_are_weighted_out(tmp_path):
    # Prepare: which clients drop is seeded by (seed, round, partition), so predictable
    cfg = FaultConfig(dropout=0.3)
    dropped = {r: {p for p in range(6) if drops_out(cfg, SEED, r, p)} for r in (1, 2, 3)}
    assert any(dropped.values()), "the seed must make at least one client drop"
    # Execute
    code, out, metrics = run_app(tmp_path, SETUP + " fault.dropout=0.3", supernodes=6)
    # Assert: the dropped clients are recorded as failed, the others aggregated with
    # their own num-examples as weights (the FedAvg arithmetic is unit-tested with golden values)
    assert code == 0, out[-4000:]
    for row in metrics["rounds"][1:]:
        gone = dropped[row["round"]]
        assert {int(p) for p in row["errors"]} == gone
        survivors = {int(p): w for p, w in row["weights"].items()}
        assert set(survivors) == set(range(6)) - gone
        by_partition = {int(m["partition-id"]): m["num-examples"] for m in row["client_metrics"]}
        assert survivors == {p: by_partition[p] for p in survivors}
        assert row["accepted"] == 6 - len(gone)


def test_consecutive_failed_rounds_stop_the_run(tmp_path):
    # Execute: every client returns NaN; stop after 2 failed rounds of 4
    code, _, metrics = run_app(
        tmp_path,
        "server.num-rounds=4 server.max-failed-rounds=2 fault.modes='0:nan,1:nan,2:nan'",
    )
    # Assert
    assert code != 0
    assert metrics["status"] == "failed"
    assert "2 consecutive failed rounds" in metrics["error"]
    assert [r["round"] for r in metrics["rounds"]] == [0, 1, 2]
    assert all(r["failed_round"] for r in metrics["rounds"][1:])
