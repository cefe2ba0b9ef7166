"""Large simulations: start-up, time per round and memory against the number of SuperNodes.

    .venv/bin/python -m benchmarks.scale --out docs/results/scale.json
    .venv/bin/python -m benchmarks.scale --nodes 10 10000 --set server.infer-partitions=false

Each N is one real ``fedpeft-sim --num-supernodes N`` run (the same launcher users run:
SuperLink, Ray, the ServerApp and one Ray actor, in a loopback-only network namespace as
root) of the tiny job below: ViT-S/14 at 28 px, LoRA, ``server.clients-per-round`` clients
sampled per round from N IID partitions of Fashion-MNIST of ``--per-client`` images each
(so a round trains the same whatever N; past 10,000 nodes the 60,000 images run out and
partitions hold 0 or 1). Per run:

* ``startup_s``: launch → the ServerApp's "round 1: sampled partitions" line (SuperLink,
  Ray, the run's start, the initial evaluation, every node's partition id);
* ``round1_s`` and ``round_s``: ``wall_seconds`` of round 1 (the actor's first model
  build and data load) and the mean of the later rounds, from ``metrics.json``;
* ``peak_pss_mb``: the peak, over 0.5 s samples, of the summed PSS of the launcher's whole
  process tree (SuperLink, superexec, flwr-simulation with the ServerApp, Ray's daemons and
  actors): shared pages counted once across processes, unlike a sum of RSS;
  ``peak_rss_mb`` is the largest single process's RSS;
* ``dataset_loads``: "Loading dataset" lines in ``run.log``: each process loads and
  partitions the dataset once (flwr-datasets), however many partitions it serves.

``--control`` adds a run at the smallest N with the largest N's training set, one round
of two clients (its partitions are large, so only its start-up is comparable): the
start-up difference to the largest N is then what the number of nodes adds, not the data.
``flower_fusion_ms`` is what Flower's simulation engine spends per SuperNode before the
ServerApp starts: ``_register_node_info_stores`` builds each node's Context from the
app's ``pyproject.toml``, parsed again for every node (``get_fused_config_from_dir``).

N runs one after the other, the largest last; a run past ``--timeout`` is stopped (its
process group) and recorded with what it reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from fedpeft.run_folder import METRICS_JSON, RUN_LOG

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.scale")

JOB = (
    "model.img-size=28 data.source='builtin' data.dataset='fashion-mnist' "
    "data.test-size=200 server.num-rounds=3 server.clients-per-round=10 "
    "server.min-train-nodes=2 peft.method='lora' peft.lora.lr=0.005 train.num-threads=1"
)
TRAIN_POOL = 60_000  # Fashion-MNIST's training split
STARTED = "round 1: sampled partitions"


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _memory(procs: list[psutil.Process]) -> tuple[float, float]:
    """(summed PSS, largest RSS) of ``procs`` in bytes; processes that ended are skipped."""
    pss = rss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pss += info.pss
        rss = max(rss, info.rss)
    return pss, rss


def run_one(nodes: int, train_size: int, extra: list[str], timeout: float, out_dir: Path) -> dict:
    """One ``fedpeft-sim`` run with ``nodes`` SuperNodes, measured as the module says."""
    name = f"n{nodes}"
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [
        JOB,
        f"data.train-size={train_size}",
        *extra,
        f"output.dir='{out_dir}' output.run-name='{name}'",
    ]  # merged in turn, later wins
    cmd = [str(Path(sys.executable).with_name("fedpeft-sim")), "--num-supernodes", str(nodes),
           "--cpus-per-client", str(os.cpu_count() or 1), "--verbose"]  # fmt: skip
    for config in configs:
        cmd += ["-c", config]
    # --verbose: every line of the run on stdout as it happens (run.log is written at the
    # end); a file, not a pipe, which a long run would fill and stall on
    run_log, stdout = out_dir / name / RUN_LOG, out_dir / f"{name}.out"
    start = time.perf_counter()
    with stdout.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    root = psutil.Process(proc.pid)
    peak_pss = peak_rss = 0.0
    startup = None
    while proc.poll() is None:
        pss, rss = _memory(_tree(root))
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        if startup is None and STARTED in stdout.read_text(errors="replace"):
            startup = time.perf_counter() - start
            log.info("N=%d: round 1 started after %.1f s", nodes, startup)
        if time.perf_counter() - start > timeout:
            log.warning("N=%d: past --timeout %.0f s; stopping its process group", nodes, timeout)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
            break
        time.sleep(0.5)
    total = time.perf_counter() - start
    result: dict = {
        "nodes": nodes,
        "train_size": train_size,
        "returncode": proc.returncode,
        "total_s": round(total, 1),
        "startup_s": None if startup is None else round(startup, 1),
        "peak_pss_mb": round(peak_pss / 2**20),
        "peak_rss_mb": round(peak_rss / 2**20),
    }
    metrics_file = out_dir / name / METRICS_JSON
    if metrics_file.exists():
        rounds = [r for r in json.loads(metrics_file.read_text())["rounds"] if r["round"] >= 1]
        later = [r["wall_seconds"] for r in rounds[1:]]
        result.update(
            rounds=len(rounds),
            round1_s=round(rounds[0]["wall_seconds"], 2) if rounds else None,
            round_s=round(sum(later) / len(later), 2) if later else None,
            final_accuracy=rounds[-1]["accuracy"] if rounds else None,
        )
    if run_log.exists():
        text = run_log.read_text(errors="replace")
        result["dataset_loads"] = text.count("Loading dataset")
        result["queried"] = "registration order" not in text
    if proc.returncode:
        result["output_tail"] = stdout.read_text(errors="replace")[-2000:]
    log.info("N=%d: %s", nodes, {k: v for k, v in result.items() if k != "output_tail"})
    return result


def flower_fusion_ms(repeats: int = 200) -> float:
    """Milliseconds Flower takes to fuse the app's run config, once per simulated node."""
    from flwr.common.config import get_fused_config_from_dir

    start = time.perf_counter()
    for _ in range(repeats):
        get_fused_config_from_dir(ROOT, {})
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv: list[str] | None = None) -> None:
    """Run each ``--nodes`` N in turn; write the results as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[10, 1_000, 10_000, 100_000])
    p.add_argument("--per-client", type=int, default=6,
                   help="training images per partition (data.train-size = this × N, at most "
                        f"{TRAIN_POOL:,}): each round's work is the same whatever N")  # fmt: skip
    p.add_argument(
        "--control",
        action="store_true",
        help="also run the smallest N with the largest N's training set",
    )
    p.add_argument("--set", action="append", default=[], help="more run-config overrides")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    report = {"job": JOB, "per_client": args.per_client, "overrides": args.set,
              "machine": machine, "flower_fusion_ms": round(flower_fusion_ms(), 2),
              "runs": []}  # fmt: skip

    def record(result: dict) -> None:  # after each run: a later one may not finish
        report["runs"].append(result)
        if args.out:
            args.out.write_text(json.dumps(report, indent=2) + "\n")

    nodes = sorted(args.nodes)
    with tempfile.TemporaryDirectory(prefix="fedpeft-scale-") as tmp:
        if args.control:
            size = min(args.per_client * nodes[-1], TRAIN_POOL)
            short = [*args.set, "server.num-rounds=1 server.clients-per-round=2"]
            control = run_one(nodes[0], size, short, args.timeout, Path(tmp) / "control")
            record({**control, "control": True})
        for n in nodes:
            size = min(args.per_client * n, TRAIN_POOL)
            record(run_one(n, size, args.set, args.timeout, Path(tmp)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
