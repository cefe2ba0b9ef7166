"""Local differential privacy in a real simulation attached to an existing Ray cluster.

Local DP: every client runs Opacus DP-SGD and keeps its accountant in
``Context.state``; the ε it reports each round must be cumulative and equal an
independent accountant over all its steps so far. Central DP is checked in the resumed
run of ``test_resume.py``. The run is FedSA-LoRA (``peft.lora.federation='fedsa'``):
each client's B is a second thing its ``Context.state`` carries between rounds in
simulation (deployment's is ``test_deploy.py``), and it never reaches the server.

The run attaches to a Ray head started here, through ``RAY_ADDRESS`` (what a user with
a Ray cluster past one machine does): one launch serves both concerns, since each launch
costs ~70 busy CPU-seconds of start-up here. The head and the run share one
loopback-only network namespace (root), so no listener reaches another address; the head
is stopped by its PID.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant
from safetensors import safe_open

from .helpers import ROOT, TINY, read_metrics, reply_bytes, run_log

pytestmark = pytest.mark.e2e
SIGMA, DELTA, BATCH = 1.0, 1e-4, 64
LOCAL = (
    f"server.num-rounds=2 dp.mode='local' dp.noise-multiplier={SIGMA} dp.clip-norm=1.0 "
    f"dp.delta={DELTA} train.batch-size={BATCH} peft.lora.federation='fedsa' "
    # 160 images per client (3 DP-SGD steps a round): what is checked is the accounting and
    # FedSA's kept B, not learning
    "data.train-size=480"
)

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
RAY_ADDRESS=127.0.0.1:$PORT "$PY" -m fedpeft.tools.launch --app "$APP" --netns never \
    --num-supernodes 3 --cpus-per-client 2 -c "$TINY" -c "$LOCAL" -c "$OUT"
CODE=$?
kill -TERM -- -$HEAD 2>/dev/null; sleep 3; kill -KILL -- -$HEAD 2>/dev/null
exit $CODE
"""


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """(exit code, output, metrics.json, run.log, the Ray head's worker logs, the names
    in the final trainable file)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):  # CI runs as root
        pytest.fail("needs root and unshare for a loopback-only network namespace")
    tmp = tmp_path_factory.mktemp("dp-local")
    raytmp = Path("/tmp") / f"fp-ray-{os.getpid()}"  # short: Ray's socket paths are limited
    raytmp.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "RAY": str(Path(sys.executable).parent / "ray"),
        "PY": sys.executable,
        "APP": str(ROOT),
        "RAYTMP": str(raytmp),
        "TINY": TINY,
        "LOCAL": LOCAL,
        "OUT": f"output.dir='{tmp / 'outputs'}' output.run-name='e2e'",
    }
    try:
        proc = subprocess.run(["unshare", "--net", "bash", "-c", SCRIPT], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        worker_logs = "".join(
            p.read_text(errors="ignore") for p in raytmp.glob("session_*/logs/worker-*")
        )
    finally:
        shutil.rmtree(raytmp, ignore_errors=True)
    output = proc.stdout + proc.stderr
    final = tmp / "outputs" / "e2e" / "final_trainable.safetensors"
    with safe_open(str(final), framework="numpy") as f:
        names = list(f.keys())
    return proc.returncode, output, read_metrics(tmp), run_log(tmp), worker_logs, names


def test_the_run_attaches_to_the_existing_ray_cluster(local_run):
    code, output, metrics, _, worker_logs, _ = local_run
    # Assert: the run completed and its clients ran on the head's workers
    assert code == 0, output[-4000:]
    assert metrics["status"] == "completed"
    assert "PEFT method lora" in worker_logs


def test_local_dp_run_completes_and_reports_epsilon_per_client(local_run):
    code, output, metrics, full_log, _, _ = local_run
    assert code == 0, output[-4000:]
    assert metrics["status"] == "completed"
    for row in metrics["rounds"][1:]:
        assert row["accepted"] == 3
        assert all(m["dp-epsilon"] > 0 for m in row["client_metrics"])
    assert "DP-SGD" in full_log  # each client's line (shown with --verbose)


def test_local_epsilon_is_cumulative_and_matches_an_independent_accountant(local_run):
    _, _, metrics, _, _, _ = local_run
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


def test_fedsa_keeps_each_clients_b_in_its_context_state(local_run):
    # Prepare
    _, _, metrics, _, _, names = local_run
    up = reply_bytes(LOCAL, 1)
    # Assert: round 1 starts every B from its init, round 2 from the client's own state
    # (each of the 3 clients trains in both rounds); no reply and no global file holds
    # a B: every reply is exactly A and the head
    restored = [[m["local-restored"] for m in row["client_metrics"]]
                for row in metrics["rounds"][1:]]  # fmt: skip
    assert restored == [[0, 0, 0], [1, 1, 1]]
    for row in metrics["rounds"][1:]:
        assert all(m["bytes-up"] == up for m in row["client_metrics"])
    assert names and not [n for n in names if ".lora_B." in n]
    assert any(".lora_A." in n for n in names)
