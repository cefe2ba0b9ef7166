"""The simulation attaches to an existing Ray cluster through RAY_ADDRESS.

A Ray head and the run share one loopback-only network namespace (root), so
no listener reaches another address. The head is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT, TINY

pytestmark = pytest.mark.e2e

# --cpus-per-client 2: one actor on the head's 2 CPUs (as helpers.CPUS_PER_CLIENT), since
# a second trains nothing faster here and costs its own imports and model build.
SCRIPT = r"""
set -u
ip link set lo up
PORT=6399
setsid "$RAY" start --head --block --node-ip-address=127.0.0.1 \
    --port=$PORT \
    --num-cpus=2 --include-dashboard=false --disable-usage-stats \
    --temp-dir="$RAYTMP" > "$RAYTMP/head.log" 2>&1 &
HEAD=$!
for i in $(seq 60); do
    "$RAY" status --address=127.0.0.1:$PORT >/dev/null 2>&1 && break; sleep 1
done
RAY_ADDRESS=127.0.0.1:$PORT "$PY" -m fedpeft.launch --app "$APP" --netns never \
    --num-supernodes 3 --cpus-per-client 2 -c "$TINY" -c "$OUT"
CODE=$?
kill -TERM -- -$HEAD 2>/dev/null; sleep 3; kill -KILL -- -$HEAD 2>/dev/null
exit $CODE
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"),
    reason="needs root for a loopback-only network namespace",
)
def test_runs_on_an_existing_ray_cluster(tmp_path):
    # Prepare
    raytmp = Path("/tmp") / f"fp-ray-{os.getpid()}"  # short: Ray's socket paths are limited
    raytmp.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "RAY": str(Path(sys.executable).parent / "ray"),
        "PY": sys.executable,
        "APP": str(ROOT),
        "RAYTMP": str(raytmp),
        "TINY": TINY.replace("server.num-rounds=2", "server.num-rounds=1"),
        "OUT": f"output.dir='{tmp_path}' output.run-name='ray'",
    }
    try:
        # Execute
        proc = subprocess.run(["unshare", "--net", "bash", "-c", SCRIPT], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        # Assert: the run completed and its clients ran on the head's workers
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert (tmp_path / "ray" / "metrics.json").is_file()
        worker_logs = "".join(
            p.read_text(errors="ignore") for p in raytmp.glob("session_*/logs/worker-*")
        )
        assert "PEFT method lora" in worker_logs
    finally:
        shutil.rmtree(raytmp, ignore_errors=True)
