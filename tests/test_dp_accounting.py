"""Accounting: Opacus's published golden value through our path; config errors."""

from __future__ import annotations

import types

import pytest
from flwr.app import ConfigRecord, RecordDict

from fedpeft.config import ConfigError, parse_run_config
from fedpeft.dp import accounting

# opacus/tests/accountants_test.py::test_rdp_accountant: σ=1.5, q=0.04, 90 epochs, δ=1e-5
GOLDEN_RDP_EPSILON = 7.32911117143
SIGMA, RATE, STEPS, DELTA = 1.5, 0.04, int(90 / 0.04), 1e-5


def test_opacus_golden_epsilon_through_our_accounting_path():
    # Prepare: the accountant train_private uses, stepped by its DPOptimizer hook
    accountant = accounting.new_accountant("rdp")
    hook = accountant.get_optimizer_hook_fn(sample_rate=RATE)
    optimizer = types.SimpleNamespace(noise_multiplier=SIGMA, accumulated_iterations=1)
    # Execute: every step, then a round-trip through Context.state, as between rounds
    for _ in range(STEPS):
        hook(optimizer)
    state = RecordDict({"dp-accountant": accounting.to_record(accountant)})
    restored = accounting.from_record(state.config_records["dp-accountant"], "rdp")
    # Assert
    assert accounting.total_steps(restored) == STEPS
    assert accounting.epsilon(restored, DELTA) == pytest.approx(GOLDEN_RDP_EPSILON, abs=1e-9)


def test_calibration_inverts_the_golden_value():
    # Execute
    sigma = accounting.calibrate(GOLDEN_RDP_EPSILON, DELTA, RATE, STEPS, "rdp")
    # Assert: the smallest σ (to the 1% search tolerance) with ε <= 7.33 is ~1.5
    assert sigma == pytest.approx(SIGMA, rel=0.02)
    check = accounting.from_record(
        ConfigRecord({"mechanism": "rdp", "noise": [sigma], "rate": [RATE], "steps": [STEPS]}),
        "rdp",
    )
    assert accounting.epsilon(check, DELTA) <= GOLDEN_RDP_EPSILON


def test_epsilon_edge_cases():
    # No step yet: nothing spent. Noise 0: no privacy at all.
    assert accounting.epsilon(accounting.new_accountant("rdp"), DELTA) == 0.0
    zero = accounting.new_accountant("rdp")
    zero.step(noise_multiplier=0.0, sample_rate=0.5)
    assert accounting.epsilon(zero, DELTA) == float("inf")


def test_stored_accountant_must_match_the_config():
    record = accounting.to_record(accounting.new_accountant("rdp"))
    with pytest.raises(ValueError, match=r"stored accountant is 'rdp'.*'prv'"):
        accounting.from_record(record, "prv")


@pytest.mark.parametrize(
    ("flat", "pattern"),
    [
        ({"dp.clip-norm": 0.0}, r"dp.clip-norm=0.0: the clipping bound C must be > 0"),
        ({"dp.clip-norm": -1.0}, r"dp.clip-norm=-1.0"),
        ({"dp.clip-norm": float("inf")}, r"dp.clip-norm=inf: no clipping.*noise-multiplier = 0"),
        ({"dp.epsilon": 0.0}, r"dp.epsilon=0.0: the privacy budget ε must be"),
        ({"dp.epsilon": -3}, r"dp.epsilon=-3"),
        ({"dp.delta": 0.0}, r"dp.delta=0.0: δ must be in \(0, 1\)"),
        ({"dp.delta": 1.0}, r"dp.delta=1.0"),
        ({"dp.delta": 1.5}, r"dp.delta=1.5"),
        ({"dp.noise-multiplier": -0.1}, r"dp.noise-multiplier=-0.1: must be a finite number >= 0"),
        ({"dp.mode": "global"}, r"dp.mode='global'.*central"),
        ({"dp.accountant": "moments"}, r"dp.accountant='moments'.*prv"),
        (
            {"dp.mode": "local", "output.resume": True, "output.run-name": "r"},
            r"output.resume=True: resuming a local-DP run would restart",
        ),
        (
            {"dp.mode": "central", "server.aggregation": "median"},
            r"server.aggregation='median': central DP .* use 'fedavg'",
        ),
    ],
)
def test_bad_dp_config_fails_at_parse_time(flat, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_run_config(flat)


def test_dp_is_off_by_default(pyproject_config):
    cfg = parse_run_config(pyproject_config)
    assert cfg.dp.mode == "none" and not cfg.dp.enabled
