"""Central differential privacy in a real ``flwr run`` simulation (tiny model, 3 clients).

The server clips, sums and noises the updates and records ε per round, cumulative,
for 3 of 3 clients sampled without replacement (local DP: ``test_dp.py``).
"""

from __future__ import annotations

import pytest
from dp_accounting import dp_event
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp import RdpAccountant

from .helpers import run_app

pytestmark = pytest.mark.e2e


def test_central_dp_run_records_epsilon_per_round(tmp_path):
    # 3 of 3 clients each round: q = 1 (no sampling amplification). The mechanics only:
    # σ = 0.1 (ε in the hundreds), since noise std σ·C/m with m = 3 clients and σ = 2
    # destroyed this tiny model in one round (loss 2.8 → 29.8, then NaN; tried 2026-11-25).
    code, output, metrics = run_app(
        tmp_path, "dp.mode='central' dp.noise-multiplier=0.1 dp.clip-norm=0.5 dp.delta=1e-3"
    )
    assert code == 0, output[-4000:]
    rows = metrics["rounds"][1:]
    # 3 of 3 without replacement, replace-one: noise multiplier σ/2 (sensitivity 2C)
    accountant = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    for row in rows:
        assert not row["failed_round"], row["failure"]
        accountant.compose(
            dp_event.SampledWithoutReplacementDpEvent(3, 3, dp_event.GaussianDpEvent(0.05))
        )
        assert row["dp_sample_rate"] == 1.0 and row["dp_releases"] == row["round"]
        assert row["dp_epsilon"] == pytest.approx(accountant.get_epsilon(1e-3), rel=1e-9)
    assert rows[0]["dp_epsilon"] < rows[1]["dp_epsilon"]
