"""The sweep runner with its real runner: one tiny ``fedpeft-sim`` run, recorded, then skipped."""

from __future__ import annotations

import json

import pytest

from fedpeft.sweep import load_sweep, run_sweep

from .helpers import ROOT, TINY

pytestmark = pytest.mark.e2e

SWEEP = """
[sweep]
base = "{tiny}"
methods = ["head"]
seeds = [3]
num-supernodes = 3
results = "{root}/results"
report = "{root}/docs"

[settings.tiny]
run-config = "server.num-rounds=1"
"""


def test_a_finished_run_is_recorded_and_not_run_again(tmp_path, monkeypatch):
    # Prepare: the sweep runs the app in the current directory, like fedpeft-sweep
    monkeypatch.chdir(ROOT)
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(root=tmp_path, tiny=TINY))
    sweep = load_sweep(path)
    # Execute
    first = run_sweep(sweep)
    second = run_sweep(sweep)
    # Assert: the config the ServerApp recorded is the one the sweep resolves, so the
    # finished run is not taken for a stale one and run again
    assert [(run.name, status) for run, status in first] == [("tiny-head-s3", "completed")]
    assert second == []
    metrics = json.loads((tmp_path / "results" / "tiny-head-s3" / "metrics.json").read_text())
    assert (metrics["config"]["peft"]["method"], metrics["config"]["seed"]) == ("head", 3)
    assert len(metrics["rounds"]) == 2
