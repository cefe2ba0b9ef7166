"""Faulty clients and drop-outs in real simulations: the run completes, weighting is right."""

from __future__ import annotations

from fedpeft.config import FaultConfig
from fedpeft.faults import drops_out
from tests.e2e.helpers import run_app

SEED = 42  # pyproject's default seed
SETUP = "server.num-rounds=2 server.min-train-nodes=6"  # 6 clients, all sampled


def test_raising_and_nan_clients_cost_under_two_points(tmp_path):
    # Prepare: the same run without the faulty clients — partitions 0 and 1 quarantined
    # (same 6-way partitioning, so the other clients' data and seeds are unchanged)
    code, out, without = run_app(tmp_path, SETUP + " server.exclude-partitions='0,1'",
                                 supernodes=6, run_name="without")  # fmt: skip
    assert code == 0, out[-4000:]
    # Execute: partition 0 raises mid-training every round, partition 1 returns NaN
    code, out, faulty = run_app(tmp_path, SETUP + " fault.modes='0:raise,1:nan'", supernodes=6,
                                run_name="faulty")  # fmt: skip
    # Assert: the run completes, the faults are recorded, and the global model is the
    # one the healthy clients alone produce (plain FedAvg would average the NaN in)
    assert code == 0, out[-4000:]
    for row in faulty["rounds"][1:]:
        assert row["accepted"] == 4 and not row["failed_round"]
        assert "raises in training" in row["errors"]["0"]
        assert "NaN" in row["rejections"]["1"]
    base, got = without["rounds"][-1]["accuracy"], faulty["rounds"][-1]["accuracy"]
    assert abs(got - base) <= 0.02, (base, got)
    assert got > 2 * 0.1  # and it learned: twice chance on 10 classes


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


def test_straggler_past_the_round_timeout_is_left_out(tmp_path):
    # Prepare: 3 clients, 1 round; partition 2 stalls 60 s before training. Baseline:
    # the two others (on two Ray workers) finish a cold round here in ≈ 10 s idle, so a
    # 40 s timeout leaves them 4× headroom (the suite runs two test files at once).
    overrides = ("server.num-rounds=1 server.round-timeout=40.0 fault.modes='2:sleep' "
                 "fault.sleep=60.0")  # fmt: skip
    # Execute
    code, out, metrics = run_app(tmp_path, overrides)
    # Assert: the round aggregates the two replies that came; the straggler is recorded
    assert code == 0, out[-4000:]
    row = metrics["rounds"][1]
    assert row["clients"] == 3 and row["accepted"] == 2 and row["no_reply"] == 1
    assert row["no_reply_partitions"] == ["2"]
    assert set(row["weights"]) == {"0", "1"}
    assert not row["failed_round"]
