"""Real ``flwr run`` simulations end to end (tiny model, digits, 3 clients, 2 rounds)."""

from __future__ import annotations

import collections
import os
import subprocess
import time

import psutil
import pytest
import torch
from flwr.common.config import parse_config_args

from fedpeft.arrays import NPY_HEADER_BYTES, to_arrayrecord, trainable_state, wire_bytes
from fedpeft.config import parse_run_config
from fedpeft.model import build_model
from fedpeft.precision import native_bf16
from fedpeft.progress import clean, parse_round

from .helpers import (
    CPUS_PER_CLIENT,
    LEARNT,
    ROOT,
    TINY,
    launch_cmd,
    run_app,
    run_log,
)

pytestmark = pytest.mark.e2e
CHANCE = 0.1  # digits: 10 balanced classes


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    # bf16 named where this CPU computes it natively (AMX / AVX512-BF16; auto picks it
    # there too); elsewhere it is emulated, ~30x slower than fp32 (docs/BENCHMARKS.md,
    # "Engine"), and fp32 runs: bf16's plumbing is tested on every CPU at unit size
    # (tests/test_engine.py). The default seed.
    precision = "bf16" if native_bf16(torch.device("cpu")) else "fp32"
    code, output, metrics = run_app(tmp, f"train.precision='{precision}'")
    return tmp, code, output, metrics


def test_run_completes_and_learns(lora_run):
    tmp, code, output, metrics = lora_run
    assert code == 0, output[-4000:]
    assert metrics["status"] == "completed"
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    # Baseline in the same run: round-0 accuracy of the untrained head (~chance);
    # LEARNT: the worst of 5 seeds checked by hand ended at 0.739 (helpers.TINY).
    assert rounds[-1]["accuracy"] >= max(LEARNT, 2 * CHANCE)
    assert rounds[-1]["accuracy"] > rounds[1]["accuracy"] > rounds[0]["accuracy"]
    out = tmp / "outputs" / "e2e"
    for name in ("metrics.json", "metrics.csv", "final_trainable.safetensors"):
        assert (out / name).is_file(), name


def test_the_user_sees_a_line_per_round_and_the_log_keeps_every_line_once(lora_run):
    # Prepare
    tmp, _, output, _ = lora_run
    full = run_log(tmp)
    # Assert: by default one line per round (0, 1, 2) and where the results go, no
    # per-client lines, no Ray tip, no DEBUG
    rounds = [line for line in output.splitlines() if parse_round(line)]
    assert [parse_round(line).round for line in rounds] == [0, 1, 2]
    assert "Results go to" in output and "Final server accuracy" in output
    for chatter in ("ClientAppActor", "FutureWarning", "DEBUG", "sampled partitions"):
        assert chatter not in output, chatter
    # run.log has every line (the per-client ones too), none twice
    assert "ClientAppActor" in full and "sampled partitions" in full
    records = [clean(line) for line in full.splitlines()]
    lines = [line for line in records if line and not line.endswith(":")]  # not blank records
    twice = [line for line, n in collections.Counter(lines).items() if n > 1]
    assert twice == []


def test_model_built_once_per_worker(lora_run):
    _, _, _, metrics = lora_run
    replies = [m for r in metrics["rounds"][1:] for m in r["client_metrics"]]
    assert len(replies) == 6  # 3 clients × 2 rounds
    # Every reply, in both rounds, came from a worker that had built exactly one model.
    assert {m["worker-model-builds"] for m in replies} == {1}
    workers = {m["worker-pid"] for m in replies}
    # at most one Ray actor per CPUS_PER_CLIENT of the machine's CPUs (one here: 2 of 2)
    assert len(workers) <= max(1, (os.cpu_count() or 1) // CPUS_PER_CLIENT)


def test_measured_bytes_are_only_the_trainable_tensors(lora_run):
    _, _, _, metrics = lora_run
    # Reference: the same seeded model built here, as the server builds it.
    cfg = parse_run_config(parse_config_args([TINY]))
    state = trainable_state(build_model(cfg.model, cfg.peft, 10, cfg.seed))
    # Distinct random values: identical arrays (zero LoRA B at init) would travel once.
    ref = to_arrayrecord({k: torch.randn_like(v) for k, v in state.items()})
    n_params, n_tensors = metrics["trainable_params"], metrics["trainable_tensors"]
    assert (n_params, n_tensors) == (sum(a.numpy().size for a in ref.values()), len(ref))
    last = metrics["rounds"][-1]
    clients = last["accepted"]
    assert clients == 3
    # Theoretical: params × 4 bytes per client.
    assert last["theoretical_up"] == clients * n_params * 4
    # Payload: exactly one .npy header (128 B) per tensor on top of the raw bytes.
    assert last["payload_up"] - clients * n_params * 4 == clients * n_tensors * NPY_HEADER_BYTES
    # On the wire: the object framing of exactly the reference tensors, nothing else.
    assert last["bytes_up"] == clients * wire_bytes(ref)
    assert all(m["bytes-up"] == wire_bytes(ref) for m in last["client_metrics"])
    # Under 1% of what full fine-tuning would send.
    assert n_params * 4 < 0.01 * 21_535_882 * 4


def test_bad_run_config_fails_at_startup(tmp_path):
    # Execute: fedpeft-sim checks the run config before it starts a SuperLink (a plain
    # `flwr run` is refused by the ServerApp, with the same parser and message)
    code, output, metrics = run_app(tmp_path, "peft.method='nope'", verbose=True)
    # Assert
    assert code != 0
    assert "SuperLink" not in output  # nothing was started (--verbose names its pid)
    assert "peft.method='nope'" in output and "lora" in output
    assert not metrics  # nothing ran


def test_sigterm_stops_the_run_and_leaves_no_process(tmp_path):
    # Prepare: a run long enough to be interrupted, up to its Ray worker (the actor that
    # runs the ClientApps): SuperLink, ServerApp, Ray and the worker are then all running.
    # Round 0's record, waited for before, comes as round 1's messages go out, after
    # ~25 busy CPU-seconds more of the ServerApp's model and evaluation (2026-12-03).
    cmd = launch_cmd(tmp_path, "server.num-rounds=50")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    launcher = psutil.Process(proc.pid)
    deadline = time.monotonic() + 300
    while not _ray_worker(launcher) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_worker(launcher), "the run never started its Ray worker"
    tree = launcher.children(recursive=True)
    assert any("flower-superlink" in " ".join(p.cmdline()) for p in tree)
    # Execute
    proc.terminate()
    # Assert: the launcher exits promptly and takes its SuperLink, Ray and workers along
    assert proc.wait(timeout=60) != 0
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, [p.cmdline()[:3] for p in alive]


def _ray_worker(launcher: psutil.Process) -> bool:
    """Whether a Ray actor for the ClientApps runs below ``launcher``."""
    for p in launcher.children(recursive=True):
        try:
            if "ClientAppActor" in " ".join(p.cmdline()):
                return True
        except psutil.Error:  # gone meanwhile
            continue
    return False
