"""What a deployed ClientApp process costs per message, beyond training (run by hand).

    .venv/bin/python -m benchmarks.clientapp_overhead [--repeats 3]
    .venv/bin/python -m benchmarks.clientapp_overhead --compare 0266ead --repeats 5

In deployment every message starts a fresh ``flwr-clientapp`` process (both
``--isolation subprocess`` and ``process`` in flwr 1.42), so nothing a process
builds survives to the next message. Each sample here is such a fresh
process doing what ``flwr-clientapp`` + our ``train`` handler do, timed by phase:

* ``python``   interpreter start-up (spawn → first line)
* ``flwr``     importing Flower's ClientApp runtime
* ``app``      importing ``client_app.app`` (torch, timm, peft, datasets, ...)
* ``data``     the node's data (partition or image folder) as tensors
* ``model``    backbone + PEFT method
* ``train``    one local epoch (the work itself)

Three cache states: ``none`` (empty ``$FEDPEFT_CACHE``: the ONNX backbone is
converted in the message, the data decoded), ``backbone`` (converted backbone
cached on disk, as after the first message), ``backbone+data`` (also the node's
decoded tensors, ``FEDPEFT_DATA_CACHE=1``).

overhead = everything but ``train``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedpeft import protocol

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("python", "flwr", "app", "data", "model", "train")
JOBS = {
    "tiny (ViT-S/14 28 px, digits, 719 images)": {
        "model.img-size": 28, "data.dataset": "digits", "data.train-size": 0,
        "data.test-size": 0,
    },
    "default job (ViT-S/14 112 px, Fashion-MNIST, 200 images)": {},
}  # fmt: skip
NODE = {"tiny": {protocol.PARTITION_ID: 0, protocol.NUM_PARTITIONS: 2},
        "default": {protocol.PARTITION_ID: 0, protocol.NUM_PARTITIONS: 10}}  # fmt: skip

CHILD = r"""
import json, sys, time
t = [(float(sys.argv[1]), 0.0), (time.time(), time.process_time())]
def mark():
    t.append((time.time(), time.process_time()))
import flwr.clientapp, flwr.supernode.runtime.run_clientapp
mark()
import client_app.app
mark()
from flwr.app import ArrayRecord
from client_app.node_data import node_setup
from fedpeft import model as model_lib
from fedpeft.config import run_config
from fedpeft.training import train_local
cfg = run_config(json.loads(sys.argv[2]))
node = node_setup(cfg, json.loads(sys.argv[3]), ArrayRecord(), 0)
mark()
model = model_lib.cached_model(node.model, cfg.peft, node.data.num_classes, cfg.seed)
mark()
train_local(model, node.data, cfg.train, cfg.lr, 1)
mark()
wall = [b[0] - a[0] for a, b in zip(t, t[1:])]
cpu = [t[1][1]] + [b[1] - a[1] for a, b in zip(t[1:], t[2:])]
print(json.dumps([wall, cpu]))
"""


STATES = (("none", False), ("backbone", False), ("backbone+data", True))


def sample(
    run_config: dict,
    node_config: dict,
    cache: Path,
    data_cache: bool,
    child: str = CHILD,
    cwd: str = str(ROOT),
) -> list[list[float]]:
    env = dict(os.environ, FEDPEFT_CACHE=str(cache), FLWR_DISABLE_UPDATE_CHECK="1",
               FEDPEFT_DATA_CACHE="1" if data_cache else "0")  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-c", child, repr(time.time()), json.dumps(run_config),
         json.dumps(node_config)],
        cwd=cwd, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


BEFORE = r"""
import json, sys, time
t0, c0 = float(sys.argv[1]), time.process_time()
import flwr.clientapp, flwr.supernode.runtime.run_clientapp, client_app.app
from fedpeft import model as model_lib
from fedpeft.data import load_partition
from fedpeft import protocol
from fedpeft.config import run_config
cfg = run_config(json.loads(sys.argv[2]))
node = json.loads(sys.argv[3])
data = load_partition(cfg.data, cfg.seed, cfg.model.img_size, node[protocol.PARTITION_ID],
                      node[protocol.NUM_PARTITIONS])
model_lib.cached_model(cfg.model, cfg.peft, data.num_classes, cfg.seed)
print(json.dumps([[time.time() - t0], [time.process_time() - c0]]))
"""


def compare(ref: str, repeats: int) -> None:
    """Overhead per message (start to model ready) at git ``ref`` vs this tree.

    Both with the converted backbone cached; this tree also with the node data cached.
    """
    job = "default job (ViT-S/14 112 px, Fashion-MNIST, 200 images)"
    run_config, node = JOBS[job], NODE["default"]
    print(f"\n{job}: seconds from process start to model ready, median of {repeats}\n")
    print("| code | wall s | CPU s |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="fp-ref-") as tmp:
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        cache = Path(tmp) / "cache"
        for label, child, cwd in ((f"`{ref}`", BEFORE, tmp), ("this tree", CHILD, str(ROOT))):
            sample(run_config, node, cache, True, child, cwd)  # warm the caches
            runs = [sample(run_config, node, cache, True, child, cwd) for _ in range(repeats)]
            wall = statistics.median(sum(r[0][:5]) for r in runs)
            cpu = statistics.median(sum(r[1][:5]) for r in runs)
            print(f"| {label} | {wall:.2f} | {cpu:.2f} |")


def table(results: list[tuple[str, str, list[float]]], what: str) -> None:
    print(f"\n{what}\n")
    print("| job | on disk | " + " | ".join(PHASES) + " | overhead | overhead share |")
    print("|---|---|" + "---:|" * (len(PHASES) + 2))
    for job, label, med in results:
        overhead = sum(med[:-1])
        cells = " | ".join(f"{v:.2f}" for v in med)
        share = overhead / (overhead + med[-1])
        print(f"| {job} | {label} | {cells} | **{overhead:.2f}** | {share:.0%} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", metavar="GIT_REF", help="only compare overhead with REF")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare, args.repeats)
        return 0
    load = os.getloadavg()[0]
    walls, cpus = [], []
    for job, run_config in JOBS.items():
        node = NODE["tiny" if job.startswith("tiny") else "default"]
        warm = Path(tempfile.mkdtemp(prefix="fp-cache-"))
        sample(run_config, node, warm, True)  # fills the backbone and data caches (not timed)
        for label, data_cache in STATES:
            runs = []
            for _ in range(args.repeats):
                cache = Path(tempfile.mkdtemp(prefix="fp-cold-")) if label == "none" else warm
                runs.append(sample(run_config, node, cache, data_cache))
                if cache != warm:
                    shutil.rmtree(cache)
            for kind, out in ((0, walls), (1, cpus)):
                med = [statistics.median(r[kind][i] for r in runs) for i in range(len(PHASES))]
                out.append((job, label, med))
        shutil.rmtree(warm)
    table(walls, "Wall seconds (median of fresh processes)")
    table(cpus, "CPU seconds of the process (all its threads; python = its start-up)")
    print(
        f"\n{args.repeats} fresh processes per row; 1-min load average {load:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end; {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
