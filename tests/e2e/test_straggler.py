"""A straggler in a real simulation: the round goes on without the reply that came too late.

(A file of its own: the run mostly waits, and pytest-xdist gives each file to one worker,
so the wait overlaps other files' work instead of following ``test_robustness.py``'s.)
"""

from __future__ import annotations

import pytest

from tests.e2e.helpers import run_app

pytestmark = pytest.mark.e2e


def test_straggler_past_the_round_timeout_is_left_out(tmp_path):
    # Prepare: 3 clients, 1 round; partition 2 stalls 45 s before training, so it replies
    # past the timeout however soon it gets the message (and the run, which waits for
    # the stalled actor before it ends, is not longer than needed). Baseline: the two
    # others (on two Ray workers: 1 CPU per client) finish a cold round here in ≈ 10 s
    # idle, so a 40 s timeout leaves them 4× headroom (the suite runs three files at once).
    overrides = ("server.num-rounds=1 server.round-timeout=40.0 fault.modes='2:sleep' "
                 "fault.sleep=45.0")  # fmt: skip
    # Execute
    code, out, metrics = run_app(tmp_path, overrides, cpus_per_client=1)
    # Assert: the round aggregates the two replies that came; the straggler is recorded
    assert code == 0, out[-4000:]
    row = metrics["rounds"][1]
    assert row["clients"] == 3 and row["accepted"] == 2 and row["no_reply"] == 1
    assert row["no_reply_partitions"] == ["2"]
    assert set(row["weights"]) == {"0", "1"}
    assert not row["failed_round"]
