"""Fault injection config and behaviour (used by the fault-tolerance e2e tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedpeft import faults
from fedpeft.config import ConfigError, FaultConfig


def test_modes_parse_by_partition():
    assert FaultConfig(modes="0:nan, 3:raise").by_partition() == {0: "nan", 3: "raise"}


@pytest.mark.parametrize("modes", ["0:explode", "x:nan", "nan"])
def test_bad_mode_names_the_entry_and_the_choices(modes):
    with pytest.raises(ConfigError, match=r"fault.modes.*expected '<partition id>:<mode>'"):
        FaultConfig(modes=modes)


def test_dropout_is_seeded_and_close_to_the_rate():
    cfg = FaultConfig(dropout=0.3)
    draws = [faults.drops_out(cfg, 42, r, p) for r in range(1, 51) for p in range(20)]
    assert draws == [faults.drops_out(cfg, 42, r, p) for r in range(1, 51) for p in range(20)]
    assert 0.25 < np.mean(draws) < 0.35  # 1,000 draws at p = 0.3


def test_raise_and_dropout_raise_before_training():
    with pytest.raises(faults.InjectedFaultError, match="partition 2 raises"):
        faults.before_training(FaultConfig(modes="2:raise"), 0, 1, 2)
    assert faults.before_training(FaultConfig(modes="2:nan"), 0, 1, 2) == "nan"


def test_dropout_in_sleep_mode_stalls_the_predicted_partitions(monkeypatch):
    # Prepare: sleep is recorded, not slept
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    cfg = FaultConfig(dropout=0.5, dropout_mode="sleep", sleep=90.0)
    predicted = [p for p in range(10) if faults.drops_out(cfg, 7, 3, p)]
    # Execute: nothing raises; the dropped ones stall, then train honestly
    modes = [faults.before_training(cfg, 7, 3, p) for p in range(10)]
    # Assert
    assert modes == [""] * 10 and 0 < len(predicted) < 10
    assert slept == [90.0] * len(predicted)


@pytest.mark.parametrize("kwargs", [{"dropout": 0.2, "dropout_mode": "sleep"},
                                    {"modes": "1:sleep"}])  # fmt: skip
def test_a_sleep_fault_without_a_sleep_time_fails_at_start_up(kwargs):
    with pytest.raises(ConfigError, match=r"fault.sleep.*needs fault.sleep > 0"):
        FaultConfig(**kwargs)


def test_the_server_crash_drill_is_off_by_default_and_refuses_a_negative_round():
    def evaluate_fn(server_round, arrays):
        return server_round

    assert faults.crash_after_aggregation(FaultConfig(), evaluate_fn) is evaluate_fn
    with pytest.raises(ConfigError, match=r"fault.server-crash-round=-1: must be >= 0"):
        FaultConfig(server_crash_round=-1)


def test_the_server_crash_drill_sigkills_its_process_in_its_round_only():
    # Prepare: the wrapped evaluate_fn in a process of its own, rounds 0, 1 then 2
    code = (
        "from fedpeft import faults; from fedpeft.config import FaultConfig\n"
        "fn = faults.crash_after_aggregation(FaultConfig(server_crash_round=2), "
        "lambda r, a: print('evaluated', r, flush=True))\n"
        "for r in (0, 1, 2, 3): fn(r, None)\n"
    )
    # Execute
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    # Assert: rounds 0 and 1 evaluated, then SIGKILL on entering round 2
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:-1] == ["evaluated 0", "evaluated 1"]


def test_scale_and_sign_flip_act_on_the_update():
    sent, honest = {"w": np.ones(2, np.float32)}, {"w": np.full(2, 1.5, np.float32)}
    np.testing.assert_allclose(faults.corrupt("scale", honest, sent, 10.0)["w"], 6.0)
    np.testing.assert_allclose(faults.corrupt("sign-flip", honest, sent, 10.0)["w"], -4.0)


def test_scale_sign_flip_and_fill_take_a_number_of_their_own():
    # Prepare
    cfg = FaultConfig(modes="1:scale=10,2:scale,3:fill=1e30,4:nan", scale=1000.0)
    # Execute
    factors = {p: cfg.factor(p) for p in (1, 2, 3)}
    filled = faults.corrupt("fill", {"w": np.zeros(3, np.float32)}, {}, factors[3])
    # Assert: a number where given, fault.scale where not; fill writes it everywhere
    assert cfg.by_partition() == {1: "scale", 2: "scale", 3: "fill", 4: "nan"}
    assert factors == {1: 10.0, 2: 1000.0, 3: 1e30}
    np.testing.assert_array_equal(filled["w"], np.full(3, 1e30, np.float32))
    assert filled["w"].dtype == np.float32


@pytest.mark.parametrize("modes", ["0:nan=3", "0:scale=abc", "0:fill=inf"])
def test_a_number_where_none_is_taken_or_a_bad_number_is_refused(modes):
    with pytest.raises(ConfigError, match=r"fault.modes.*take '=<finite number>'"):
        FaultConfig(modes=modes)
