"""Top-k through the real ServerApp and ClientApp in this process (:mod:`tests.app_grid`):
each malformed top-k or codec-agnostic encoding the ClientApp makes (``fault.modes``,
:func:`fedpeft.faults.corrupt_encoding` after honest encoding) is rejected by name
while the round goes on. The int8 uplink's real ``flwr run`` is
``tests/e2e/test_compression.py``.
"""

from __future__ import annotations

import json

import pytest

from fedpeft.config import app_config
from tests.app_grid import run_in_process
from tests.conftest import ROOT
from tests.e2e.helpers import TINY

# Partition 0 is honest; 1-8 each malformed in one way.
MODES = {
    1: ("codec-name", "reply names codec 'fp16'; this run's comm.uplink is 'topk'"),
    2: ("part-dtype", "expected float32["),
    3: ("part-shape", "expected float32["),
    4: ("part-missing", "#index'], extra []"),
    5: ("index-range", "top-k indices must be in [0, "),
    6: ("index-duplicate", "top-k indices repeat"),
    7: ("index-unsorted", "top-k indices are not sorted ascending"),
    8: ("topk-count", "expected float32["),
}
NODES = 1 + len(MODES)
# 30 images per client: what they send is malformed either way
SETUP = (f"comm.uplink='topk' comm.topk-fraction=0.1 server.num-rounds=1 "
         f"data.train-size={30 * NODES} server.min-train-nodes={NODES} fault.modes='"
         + ",".join(f"{p}:{m}" for p, (m, _) in MODES.items()) + "'")  # fmt: skip


@pytest.fixture(scope="module")
def topk_round(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("topk")
    run_config = app_config(ROOT, [TINY, SETUP, f"output.dir='{tmp}' output.run-name='r'"])
    run_in_process(run_config, NODES)
    metrics = json.loads((tmp / "r" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    return metrics


def test_the_honest_topk_reply_is_aggregated(topk_round):
    # Prepare
    row = topk_round["rounds"][1]
    # Assert: top-k's fp32 values and int32 indices, a tenth of each tensor, and the record
    assert row["accepted"] == 1 and list(row["weights"]) == ["0"] and not row["failed_round"]
    assert topk_round["wire"]["uplink"]["codec"] == "topk"
    assert topk_round["wire"]["uplink"]["error_feedback"] is True
    # 0.237 measured (2026-12-02): 8 bytes per kept tenth, plus each part's header
    assert 0.2 < row["uplink_ratio"] < 0.26, row["uplink_ratio"]


@pytest.mark.parametrize("partition", sorted(MODES))
def test_each_malformed_topk_encoding_is_rejected_by_name(topk_round, partition):
    # Prepare
    mode, reason = MODES[partition]
    # Execute
    rejections = topk_round["rounds"][1]["rejections"]
    # Assert
    assert reason in rejections[str(partition)], (mode, rejections)
