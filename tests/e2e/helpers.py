"""Run the app through the real launcher (loopback netns as root) and read results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from flwr.common.config import parse_config_args

from fedpeft.arrays import to_arrayrecord, wire_bytes
from fedpeft.config import parse_run_config
from fedpeft.model import build_model
from fedpeft.sharing import shared_state, sharing_of, uplink_names
from fedpeft.tools.launch import LOG_FILE

ROOT = Path(__file__).resolve().parents[2]

# Tiny but real: the offline ViT-S/14 at 28 px (2×2 patches) on sklearn digits.
# LoRA lr 0.005 learns for any seed: checked by hand once (benchmarks.plain_loop, the same
# partitions, client seeds and training as these 3 clients) over seeds 42, 1, 7, 3, 11:
# 0.48-0.59 after round 1, 0.74-0.80 after round 2, fp32 and bf16 alike. lr 0.01 was
# seed-fragile (0.09 with seed 42, 0.62-0.78 with the others); 0.03 never learnt.
# One torch thread per process: the suite runs three such runs at once on 2 cores, and
# threads past the cores spin. Three concurrent TINY runs here took 436 busy CPU-seconds
# and 220 s with the default threads (2 per process), 171 and 87 s with 1, same accuracy
# (2026-12-02).
TINY = (
    "model.img-size=28 data.source='builtin' data.dataset='digits' data.train-size=0 "
    "data.test-size=0 server.num-rounds=2 server.fraction-train=1.0 server.min-train-nodes=3 "
    "peft.method='lora' peft.lora.lr=0.005 train.num-threads=1"
)
# Below the worst of those seeds after 2 rounds (0.739), 5× chance on 10 digit classes.
LEARNT = 0.5
# Ray CPUs per simulated client: 2 (this machine's all) makes one Ray actor run the clients
# in turn. A second actor trains nothing faster on 2 cores but costs its own imports and
# model build: the TINY run took 95 busy CPU-seconds with 1 CPU per client and 70 with 2
# (same final accuracy, measured 2026-12-02); the suite runs several such runs at once.
CPUS_PER_CLIENT = 2


def run_app(
    tmp_path: Path,
    overrides: str,
    supernodes: int = 3,
    timeout: int = 600,
    env: dict[str, str] | None = None,
    netns: str = "auto",
    run_name: str = "e2e",
    cpus_per_client: int = CPUS_PER_CLIENT,
    verbose: bool = False,
) -> tuple[int, str, dict]:
    """Run one simulation; return (exit code, output, metrics.json).

    The output is what a user sees (``--verbose``: every line); the run folder's
    ``run.log`` has every line either way.
    """
    cmd = launch_cmd(tmp_path, overrides, supernodes, timeout, netns, run_name, cpus_per_client,
                     verbose)  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60,
                          env={**os.environ, **(env or {})})  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr, read_metrics(tmp_path, run_name)


def read_metrics(tmp_path: Path, run_name: str = "e2e") -> dict:
    """``metrics.json`` of a run under ``tmp_path`` ({} if absent)."""
    path = tmp_path / "outputs" / run_name / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_log(tmp_path: Path, run_name: str = "e2e") -> str:
    """The run folder's ``run.log``: every line of the run's output."""
    return (tmp_path / "outputs" / run_name / LOG_FILE).read_text()


def reply_bytes(
    overrides: str, server_round: int, num_classes: int = 10, rank: int | None = None
) -> int:
    """Wire bytes of one fp32 reply in ``server_round`` of a TINY run with ``overrides``.

    The tensors the method sends up that round (FedSA-LoRA: no B; RoLoRA: B in odd
    rounds, A in even ones; both: the head), of the seeded model built here as every
    process builds it (at a node's LoRA ``rank``: HetLoRA), with distinct values:
    identical arrays (LoRA's zero B at init) would travel once.
    """
    cfg = parse_run_config(parse_config_args([TINY, overrides]))
    sharing = sharing_of(cfg.peft)
    model = build_model(cfg.model, cfg.peft, num_classes, cfg.seed, rank)
    state = shared_state(model, sharing)
    sent = uplink_names(frozenset(state), sharing, server_round)
    return wire_bytes(to_arrayrecord({k: torch.randn_like(v) for k, v in state.items()
                                      if k in sent}))  # fmt: skip


def launch_cmd(
    tmp_path: Path,
    overrides: str,
    supernodes: int = 3,
    timeout: int = 600,
    netns: str = "auto",
    run_name: str = "e2e",
    cpus_per_client: int = CPUS_PER_CLIENT,
    verbose: bool = False,
) -> list[str]:
    """The ``fedpeft-sim`` command line of one tiny run."""
    out_dir = tmp_path / "outputs"
    return [
        sys.executable, "-m", "fedpeft.tools.launch", "--app", str(ROOT),
        "--num-supernodes", str(supernodes), "--cpus-per-client", str(cpus_per_client),
        "--netns", netns,
        "--timeout", str(timeout), "-c", TINY, "-c", overrides,
        "-c", f"output.dir='{out_dir}' output.run-name='{run_name}'",
        *(["--verbose"] if verbose else []),
    ]  # fmt: skip


def deploy_config(out: Path, extra: str) -> list[str]:
    """``fedpeft-deploy`` run-config strings of a tiny run writing under ``out/deploy``."""
    return [TINY, f"output.dir='{out}' output.run-name='deploy' {extra}"]


# Wrapper of a run on a full disk: $1 the output folder (a tmpfs from here on), $2 where it
# is copied when the run ends, then the run's command.
FULL_DISK = (
    'out="$1"; kept="$2"; shift 2; mount -t tmpfs -o size=8m fedpeft-test "$out" || exit 97; '
    '"$@"; rc=$?; rm -f "$out/filler"; cp -a "$out/." "$kept"; exit $rc'
)


def checkpoint_round(path: Path) -> int | None:
    """The round of the checkpoint at ``path`` (``None``: absent or not yet whole)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return int(json.loads(f.metadata()["fedpeft"])["round"])
    except (OSError, SafetensorError, KeyError, ValueError):
        return None


def run_on_full_disk(
    tmp_path: Path, overrides: str, supernodes: int, fill_after: int, timeout: int = 600
) -> tuple[int, str, Path, bytes]:
    """One simulation whose output folder is an 8 MB tmpfs that fills up after the
    checkpoint of round ``fill_after``; return (exit code, output, the run folder as it was
    left, that checkpoint's bytes).

    The tmpfs is real, in a private mount namespace (as root, ``unshare --mount``, as the
    launcher's network namespace). Once the checkpoint of ``fill_after`` is on it, the
    tmpfs is filled through the run's ``/proc/<pid>/root`` to three quarters of a
    checkpoint free: more than the round's other files take (metrics, the best round's
    tensors, the log), less than the next checkpoint needs.
    """
    out, kept = tmp_path / "outputs", tmp_path / "kept"
    out.mkdir()
    kept.mkdir()
    cmd = launch_cmd(tmp_path, overrides, supernodes, timeout, run_name="e2e")
    log_file = tmp_path / "output.txt"
    with log_file.open("w") as log:
        proc = subprocess.Popen(["unshare", "--mount", "sh", "-c", FULL_DISK, "sh", str(out),
                                 str(kept), *cmd], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    inside = Path(f"/proc/{proc.pid}/root") / out.relative_to("/")  # the run's view
    ckpt = inside / "e2e" / "checkpoint.safetensors"
    deadline = time.monotonic() + timeout
    while checkpoint_round(ckpt) != fill_after:
        assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()[-4000:]
        time.sleep(0.1)
    before = ckpt.read_bytes()
    stat = os.statvfs(inside)
    with (inside / "filler").open("wb") as f:
        f.write(b"\0" * (stat.f_bavail * stat.f_frsize - 3 * len(before) // 4))
    code = proc.wait(timeout=timeout)
    return code, log_file.read_text(), kept / "e2e", before
