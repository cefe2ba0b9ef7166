"""The ServerApp's ``main`` in this process, on a fake Grid: how a run fails, end to end.

The real ``flwr run`` plumbing (SuperLink, Ray, ClientApps) is covered by ``tests/e2e``;
what is checked here is the ServerApp's own start-up and failure handling with the real
model, data and recorder, which needs no federation (a launch costs ~40 CPU-seconds,
this ~5).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, RecordDict

from fedpeft.config import app_config
from server_app import checkpoint
from server_app.app import main
from server_app.checkpoint import CheckpointError
from server_app.strategy import RoundsFailedError
from tests.conftest import ROOT
from tests.e2e.helpers import TINY
from tests.fakes import FakeGrid


def _context(tmp_path, overrides: str) -> Context:
    """A Context as the SuperLink gives the ServerApp: the app's config plus overrides."""
    run_config = app_config(ROOT, [TINY, overrides, f"output.dir='{tmp_path}' output.run-name='r'"])
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


def _nan(sent: dict[str, np.ndarray], server_round: int):
    return {k: np.full_like(v, np.nan) for k, v in sent.items()}, 10


def test_consecutive_failed_rounds_stop_the_run_and_are_recorded(tmp_path):
    # Prepare: every client returns NaN; stop after 2 failed rounds of 4
    grid = FakeGrid({n: n for n in range(3)}, {n: _nan for n in range(3)})
    context = _context(tmp_path, "server.num-rounds=4 server.max-failed-rounds=2")
    # Execute
    with pytest.raises(RoundsFailedError):
        main(grid, context)
    # Assert: the run is recorded as failed, with the rounds it went through
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert "2 consecutive failed rounds" in metrics["error"]
    assert [r["round"] for r in metrics["rounds"]] == [0, 1, 2]
    assert all(r["failed_round"] for r in metrics["rounds"][1:])
    assert all("NaN" in e for r in metrics["rounds"][1:] for e in r["rejections"].values())


def test_resume_of_another_method_fails_at_startup_naming_the_mismatch(tmp_path):
    # Prepare: a checkpoint left by a LoRA run (only the fingerprint matters here)
    arrays = ArrayRecord({"head.bias": Array(np.zeros(10, np.float32))})
    (tmp_path / "r").mkdir()
    lora = {"dataset": "digits", "method": "lora"}
    checkpoint.save(tmp_path / "r", arrays, 1, {"fingerprint": lora})
    grid = FakeGrid({0: 0}, {})  # never asked to train
    # Execute: resume it as bias tuning
    with pytest.raises(CheckpointError) as err:
        main(grid, _context(tmp_path, "output.resume=true peft.method='bias'"))
    # Assert
    assert "method: checkpoint has 'lora', this run has 'bias'" in str(err.value)
    assert grid.sent == []  # nothing was sent to any node
