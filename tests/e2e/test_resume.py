"""Checkpoint and resume: a run SIGKILLed in round 2 and resumed equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
from safetensors import safe_open

from tests.e2e.helpers import ROOT, launch_cmd, read_metrics, run_app

# 4 clients, 2 sampled per round (seeded by partition id), 2 rounds; a stateful server
# optimizer (FedAdam's moments after round 1 must come back from the checkpoint's tensors
# for round 2 to match).
SETUP = ("server.num-rounds=2 server.fraction-train=0.5 server.min-train-nodes=2 "
         "server.optimizer='fedadam' server.lr=0.01")  # fmt: skip
SAME = ("round", "accuracy", "loss", "clients", "accepted", "bytes_down", "bytes_up",
        "cum_bytes", "weights")  # fmt: skip


def _checkpoint_round(run_dir: Path) -> int:
    with safe_open(str(run_dir / "checkpoint.safetensors"), framework="numpy") as f:
        return int(json.loads(f.metadata()["fedpeft"])["round"])


def _tensors(run_dir: Path) -> dict[str, bytes]:
    with safe_open(str(run_dir / "final_trainable.safetensors"), framework="numpy") as f:
        return {k: f.get_tensor(k).tobytes() for k in f.keys()}


def _kill_serverapp_in_round_2(proc: subprocess.Popen, run_dir: Path, timeout: float) -> None:
    """SIGKILL the process running the ServerApp once round 1 is checkpointed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "checkpoint.safetensors").exists() and _checkpoint_round(run_dir) == 1:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("round 1 was never checkpointed")
    server = [p for p in psutil.Process(proc.pid).children(recursive=True)
              if any("flwr-simulation" in part for part in p.cmdline())]  # fmt: skip
    assert len(server) == 1, server
    os.kill(server[0].pid, signal.SIGKILL)


def _launch(tmp_path: Path, run_name: str) -> subprocess.Popen:
    cmd = launch_cmd(tmp_path, SETUP, supernodes=4, run_name=run_name)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def test_killed_in_round_2_and_resumed_equals_uninterrupted(tmp_path):
    # Prepare: the uninterrupted reference run, started beside the run to kill (each has
    # its own SuperLink; together they take the test's time of one)
    full = _launch(tmp_path, "full")
    # Execute: the same run, killed during round 2 ...
    killed = tmp_path / "outputs" / "killed"
    proc = _launch(tmp_path, "killed")
    try:
        _kill_serverapp_in_round_2(proc, killed, timeout=300)
        proc.communicate(timeout=300)
        out = full.communicate(timeout=600)[0]
    finally:
        for p in (proc, full):
            if p.poll() is None:  # the launcher stops its SuperLink on SIGTERM
                p.terminate()
                p.communicate(timeout=60)
    assert full.returncode == 0, out[-4000:]
    reference = read_metrics(tmp_path, "full")
    assert proc.returncode != 0, "the killed run must not report success"
    assert _checkpoint_round(killed) == 1, "killed after round 2 finished: test did not bite"
    assert read_metrics(tmp_path, "killed")["status"] == "running"  # died without finishing
    # ... then resumed from its checkpoint
    code, out, resumed = run_app(tmp_path, SETUP + " output.resume=true", supernodes=4,
                                 run_name="killed")  # fmt: skip
    # Assert
    assert code == 0, out[-4000:]
    assert resumed["resumed_after_round"] == 1
    assert _tensors(killed) == _tensors(tmp_path / "outputs" / "full")
    rows = [{k: r.get(k) for k in SAME} for r in resumed["rounds"]]
    assert rows == [{k: r.get(k) for k in SAME} for r in reference["rounds"]]
    assert [r["round"] for r in rows] == [0, 1, 2]
