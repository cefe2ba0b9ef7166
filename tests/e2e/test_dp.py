"""Differential privacy in real ``flwr run`` simulations (tiny model, digits, 3 clients).

Local DP: every client runs Opacus DP-SGD and keeps its accountant in
``Context.state``; the ε it reports each round must be cumulative and equal an
independent accountant over all its steps so far. Central DP is
``test_dp_central_run.py`` (a file of its own, so the two runs go to two workers).
"""

from __future__ import annotations

import math

import pytest
from opacus.accountants import RDPAccountant

from .helpers import run_app, run_log

pytestmark = pytest.mark.e2e
SIGMA, DELTA, BATCH = 1.0, 1e-4, 64
LOCAL = (
    f"server.num-rounds=2 dp.mode='local' dp.noise-multiplier={SIGMA} dp.clip-norm=1.0 "
    f"dp.delta={DELTA} train.batch-size={BATCH}"
)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dp-local")
    return *run_app(tmp, LOCAL), run_log(tmp)


def test_local_dp_run_completes_and_reports_epsilon_per_client(local_run):
    code, output, metrics, full_log = local_run
    assert code == 0, output[-4000:]
    assert metrics["status"] == "completed"
    for row in metrics["rounds"][1:]:
        assert row["accepted"] == 3
        assert all(m["dp-epsilon"] > 0 for m in row["client_metrics"])
    assert "DP-SGD" in full_log  # each client's line (shown with --verbose)


def test_local_epsilon_is_cumulative_and_matches_an_independent_accountant(local_run):
    _, _, metrics, _ = local_run
    history: dict[int, list[float]] = {}
    for server_round, row in enumerate(metrics["rounds"][1:], start=1):
        for m in row["client_metrics"]:
            # Independent: q and steps from the client's sample count and the batch size
            per_round = math.ceil(m["num-examples"] / BATCH)
            accountant = RDPAccountant()
            for _ in range(per_round * server_round):  # every step of every round so far
                accountant.step(noise_multiplier=SIGMA, sample_rate=1 / per_round)
            assert m["dp-steps"] == per_round * server_round
            assert m["dp-epsilon"] == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-9)
            history.setdefault(m["partition-id"], []).append(m["dp-epsilon"])
        assert row["dp_epsilon_max"] == max(m["dp-epsilon"] for m in row["client_metrics"])
    assert sorted(history) == [0, 1, 2]
    for eps in history.values():  # strictly increasing over the two rounds
        assert len(eps) == 2 and eps[0] < eps[1]
