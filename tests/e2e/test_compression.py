"""Compression through real ``flwr run`` s: int8 uplink + fp16 downlink learns, and every
malformed-encoding class is rejected by name while the round goes on.

Two simulations: int8 up / fp16 down with 3 honest clients and one per codec-agnostic
and int8 class (2 rounds), and a one-round top-k run for top-k's own classes. What
each client sends is made by the real ClientApp (``fault.modes`` alters its encoded
record after honest encoding, :func:`fedpeft.faults.corrupt_encoding`).
"""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.helpers import LEARNT, ROOT, launch_cmd, read_metrics

CHANCE = 0.1  # digits: 10 classes
INT8_MODES = {
    3: ("codec-name", "reply names codec 'fp16'; this run's comm.uplink is 'int8'"),
    4: ("part-dtype", "expected int8["),
    5: ("part-shape", "expected int8["),
    6: ("part-missing", "#scale'], extra []"),
    7: ("scale-nan", "int8 scales must be finite and > 0"),
    8: ("scale-zero", "int8 scales must be finite and > 0"),
}
TOPK_MODES = {
    1: ("index-range", "top-k indices must be in [0, "),
    2: ("index-duplicate", "top-k indices repeat"),
    3: ("index-unsorted", "top-k indices are not sorted ascending"),
    4: ("topk-count", "expected float32["),
    5: ("part-missing", "#index'], extra []"),
}


def _modes(modes: dict) -> str:
    return "fault.modes='" + ",".join(f"{p}:{m}" for p, (m, _) in modes.items()) + "'"


# 3 local epochs in the int8 run: 9 nodes split digits into partitions a third of TINY's
# (3 nodes), and its 3 honest clients reached only 0.24 after 2 rounds of 1 epoch (0.78
# with 3 epochs, measured 2026-12-02).
RUNS = {
    "int8": (3 + len(INT8_MODES), "comm.uplink='int8' comm.downlink='fp16' train.epochs=3 "
             f"server.min-train-nodes={3 + len(INT8_MODES)} {_modes(INT8_MODES)}"),
    "topk": (1 + len(TOPK_MODES), "comm.uplink='topk' comm.topk-fraction=0.1 "
             f"server.num-rounds=1 server.min-train-nodes={1 + len(TOPK_MODES)} "
             f"{_modes(TOPK_MODES)}"),
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both simulations, started together (the file's wall time is the longer one's)."""
    tmp = tmp_path_factory.mktemp("compression")
    procs = {}
    for name, (nodes, overrides) in RUNS.items():
        cmd = launch_cmd(tmp, overrides, supernodes=nodes, run_name=name)
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)  # fmt: skip
    out = {}
    for name, proc in procs.items():
        out[name] = proc.communicate(timeout=900)[0]
        assert proc.returncode == 0, out[name][-4000:]
    return {name: (read_metrics(tmp, name), out[name]) for name in RUNS}


@pytest.fixture(scope="module")
def int8_run(runs):
    return runs["int8"]


@pytest.fixture(scope="module")
def topk_run(runs):
    return runs["topk"][0]


def test_int8_uplink_and_fp16_downlink_learn(int8_run):
    # Prepare
    metrics, out = int8_run
    rounds = metrics["rounds"]

    # Assert: baseline in the same run: round 0 (the untrained head, ~chance); LEARNT as in
    # test_simulation (the worst of 5 fp32 seeds by hand ended at 0.739)
    assert metrics["status"] == "completed"
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"]
    assert rounds[-1]["accuracy"] >= max(LEARNT, 2 * CHANCE)
    assert [r["accepted"] for r in rounds[1:]] == [3, 3]
    uplink = {"codec": "int8", "payload": "update", "error_feedback": True,
              "carried_as": "int8 values and float32 absmax scales"}  # fmt: skip
    assert metrics["wire"]["uplink"] == uplink
    assert metrics["wire"]["downlink"]["codec"] == "fp16"
    # LoRA + head at 28 px: int8 values + one scale Array per tensor; fp16 halves the rest
    for row in rounds[1:]:
        assert 0.25 < row["uplink_ratio"] < 0.5, row["uplink_ratio"]
        assert 0.5 <= row["downlink_ratio"] < 0.6, row["downlink_ratio"]
    assert "(up 0.2" in out and "fp32) |" in out  # the round line shows the ratios


@pytest.mark.parametrize("partition", sorted(INT8_MODES))
def test_each_malformed_int8_encoding_is_rejected_by_name(int8_run, partition):
    # Prepare
    mode, reason = INT8_MODES[partition]

    # Execute
    rejections = [r["rejections"] for r in int8_run[0]["rounds"][1:]]

    # Assert: in every round
    assert all(reason in r[str(partition)] for r in rejections), (mode, rejections)


@pytest.mark.parametrize("partition", sorted(TOPK_MODES))
def test_each_malformed_topk_encoding_is_rejected_by_name(topk_run, partition):
    # Prepare
    mode, reason = TOPK_MODES[partition]

    # Execute
    row = topk_run["rounds"][1]

    # Assert: the honest partition 0 is aggregated, the round goes on
    assert reason in row["rejections"][str(partition)], (mode, row["rejections"])
    assert row["accepted"] == 1 and not row["failed_round"]
