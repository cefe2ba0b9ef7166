"""Training throughput of a ``flwr run`` simulation vs a plain PyTorch loop (run by hand).

    .venv/bin/python -m benchmarks.throughput --clients 4 32 > docs/throughput.md

For each client count N: the app runs as a Ray simulation through ``fedpeft-sim``
(N SuperNodes, every client trains every round), then ``benchmarks.plain_loop``
trains the same N partitions with the same seeds sequentially in one process.
Images/s is local-training images over the server's training-phase time
(sending the round's messages to aggregating the replies: ``train_seconds`` in
``metrics.json``), so start-up and central evaluation are reported separately
as end-to-end wall time. Peak memory is the peak over time of the summed PSS of
the whole process tree (SuperLink, ServerApp, Ray and its workers; or the one
plain-loop process), sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.plain_loop import app_config
from fedpeft.protocol import NUM_EXAMPLES
from fedpeft.run_folder import METRICS_JSON

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def _tree_pss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_measured(cmd: list[str], timeout: float, log_path: Path) -> tuple[int, float, int]:
    """Run ``cmd`` (output to ``log_path``); return (exit code, wall s, peak summed PSS)."""
    peak = 0
    start = time.perf_counter()
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    root = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.5):
            try:
                peak = max(peak, _tree_pss(root))
            except psutil.NoSuchProcess:
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        code = proc.wait(timeout=timeout)
    finally:
        done.set()
        thread.join()
    return code, time.perf_counter() - start, peak


def _fail(what: str, code: int, log_path: Path) -> None:
    tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
    raise SystemExit(f"{tail}\n{what} failed (exit {code}); log above")


def _rate(rounds: list[dict]) -> float:
    return sum(r["images"] for r in rounds) / sum(r["train_seconds"] for r in rounds)


def _warm(rounds: list[dict]) -> list[dict]:
    return rounds[1:] or rounds  # round 1 of a simulation also starts the Ray workers


def bench(n: int, overrides: list[str], out: Path, timeout: float) -> dict:
    """Measure the simulation and the plain loop for ``n`` clients."""
    config = [*overrides, f"server.min-train-nodes={n}",
              f"output.dir='{out}' output.run-name='sim-{n}'"]  # fmt: skip
    sim_cmd = [sys.executable, "-m", "fedpeft.tools.launch", "--app", str(ROOT),
               "--num-supernodes", str(n), "--cpus-per-client", "1"]  # fmt: skip
    for item in config:
        sim_cmd += ["-c", item]
    code, sim_wall, sim_peak = run_measured(sim_cmd, timeout, out / f"sim-{n}.log")
    if code:
        _fail(f"simulation with {n} clients", code, out / f"sim-{n}.log")
    rows = json.loads((out / f"sim-{n}" / METRICS_JSON).read_text())["rounds"]
    epochs = app_config(overrides).train.epochs
    sim_rounds = [
        {"images": sum(int(c[NUM_EXAMPLES]) for c in r["client_metrics"]) * epochs,
         "train_seconds": r["train_seconds"], "accuracy": r["accuracy"]}
        for r in rows if r["round"] > 0
    ]  # fmt: skip
    plain_json = out / f"plain-{n}.json"
    plain_cmd = [sys.executable, "-m", "benchmarks.plain_loop", "--num-clients", str(n),
                 "--out", str(plain_json)]  # fmt: skip
    for item in overrides:
        plain_cmd += ["-c", item]
    code, plain_wall, plain_peak = run_measured(plain_cmd, timeout, out / f"plain-{n}.log")
    if code:
        _fail(f"plain loop with {n} clients", code, out / f"plain-{n}.log")
    plain = json.loads(plain_json.read_text())
    return {
        "clients": n,
        "images": sum(r["images"] for r in sim_rounds),
        "sim_rate": _rate(_warm(sim_rounds)), "plain_rate": _rate(_warm(plain["rounds"])),
        "sim_rate_all": _rate(sim_rounds), "plain_rate_all": _rate(plain["rounds"]),
        "sim_wall": sim_wall, "plain_wall": plain_wall,
        "sim_peak": sim_peak, "plain_peak": plain_peak,
        "sim_acc": sim_rounds[-1]["accuracy"], "plain_acc": plain["rounds"][-1]["accuracy"],
        "plain_threads": plain["torch_threads"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--images-per-client", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-c", "--run-config", action="append", default=[],
                        help="extra run-config overrides for both")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="fedpeft-throughput-") as tmp:
        for n in args.clients:
            overrides = [
                f"data.train-size={n * args.images_per_client} data.test-size=500 "
                f"server.num-rounds={args.rounds} server.fraction-train=1.0",
                *args.run_config,
            ]
            print(f"... {n} clients", file=sys.stderr, flush=True)
            results.append(bench(n, overrides, Path(tmp), args.timeout))
    print(f"Command: `{' '.join(['python -m benchmarks.throughput', *sys.argv[1:]])}`  ")
    print(
        f"Machine: {os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"no GPU; plain loop with {results[0]['plain_threads']} torch threads, simulation with "
        "1 CPU per client (Ray runs as many clients at once as there are cores). img/s over "
        "rounds 2+ (warm); in brackets over all rounds, where the simulation's round 1 also "
        "starts the Ray workers, builds the model and loads the data.\n"
    )
    print(
        "| clients | images trained | simulation img/s | plain loop img/s | ratio sim/plain "
        "| end-to-end sim / plain | peak memory (PSS) sim / plain | final acc sim / plain |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['clients']} | {r['images']:,} "
            f"| {r['sim_rate']:.1f} ({r['sim_rate_all']:.1f}) "
            f"| {r['plain_rate']:.1f} ({r['plain_rate_all']:.1f}) "
            f"| {r['sim_rate'] / r['plain_rate']:.2f} "
            f"({r['sim_rate_all'] / r['plain_rate_all']:.2f}) "
            f"| {r['sim_wall']:.0f} s / {r['plain_wall']:.0f} s "
            f"| {r['sim_peak'] / MiB:,.0f} MiB / {r['plain_peak'] / MiB:,.0f} MiB "
            f"| {r['sim_acc']:.3f} / {r['plain_acc']:.3f} |"
        )


if __name__ == "__main__":
    main()
