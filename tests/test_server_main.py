"""The ServerApp's ``main`` in this process, on a fake Grid: how a run fails, end to end.

Consecutive failed rounds, a checkpoint of another setup, a full disk at the checkpoint.

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
from safetensors import safe_open

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


def _honest(sent: dict[str, np.ndarray], server_round: int):
    return {k: v + np.float32(0.01) for k, v in sent.items()}, 10


def test_a_full_disk_keeps_the_last_checkpoint_and_fails_the_run(tmp_path, monkeypatch):
    # Prepare: the disk fills up while round 2's checkpoint is written (rounds 0 and 1
    # write theirs)
    real_save = checkpoint.save_file
    calls = []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 3:
            with open(filename, "wb") as f:  # a partial file, then ENOSPC
                f.write(b"\0" * 64)
            raise OSError(28, "No space left on device")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    grid = FakeGrid({n: n for n in range(3)}, {n: _honest for n in range(3)})
    # Execute
    with pytest.raises(CheckpointError) as err:
        main(grid, _context(tmp_path, "server.num-rounds=3"))
    # Assert: a clear message; round 1's checkpoint is intact and no partial file is left
    run_dir = tmp_path / "r"
    assert "No space left on device" in str(err.value) and "after round 2" in str(err.value)
    assert "previous checkpoint is unchanged" in str(err.value)
    assert not (run_dir / "checkpoint.safetensors.tmp").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "No space left" in metrics["error"]
    with safe_open(str(run_dir / "checkpoint.safetensors"), framework="numpy") as f:
        assert json.loads(f.metadata()["fedpeft"])["round"] == 1
