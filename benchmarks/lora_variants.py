"""LoRA federation variants side by side: accuracy (global and on the clients) and uplink.

    .venv/bin/python -m benchmarks.lora_variants --out docs/results/lora-variants.json

Runs the real ServerApp and ClientApp in this process (:func:`tests.app_grid.
run_in_process`: Flower's messages cross as protobuf bytes, each node keeps its own
``Context``), so one run costs its training, not a SuperLink and Ray. The setting is
the e2e tests' TINY one (the offline ViT-S/14 at 28 px on sklearn digits, 1,797
images, 10 classes), 3 clients all sampled, ``--rounds`` rounds, every client
evaluating each round on the fifth of its images it holds out. For each variant of
``peft.lora.federation``, partitioner and seed it records the global model's accuracy
on the central test split, the clients' accuracy on their held-out images (with their
local tensors: personalised for ``fedsa``), and the uplink bytes per reply each round,
measured on the wire, against the share of plain LoRA's factor bytes the variant sends.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from fedpeft.config import app_config
from tests.app_grid import run_in_process
from tests.e2e.helpers import ROOT, TINY, reply_bytes

VARIANTS = ("fedavg", "ffa", "fedsa", "rolora")
PARTITIONERS = {"iid": "data.partitioner='iid'",
                "dirichlet-0.1": "data.partitioner='dirichlet' data.dirichlet.alpha=0.1 "
                                 "data.dirichlet.min-partition-size=20"}  # fmt: skip
EVAL = "server.fraction-evaluate=1.0 data.local-test-fraction=0.2"
NODES = 3


def one_run(variant: str, partitioner: str, seed: int, rounds: int) -> dict:
    """One in-process run's rows and its uplink per reply against the expected bytes."""
    setting = (f"peft.lora.federation='{variant}' {PARTITIONERS[partitioner]} {EVAL} "
               f"seed={seed} server.num-rounds={rounds}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run_in_process(app_config(ROOT, [TINY, setting, f"output.dir='{tmp}' "
                                         "output.run-name='r'"]), NODES)  # fmt: skip
        seconds = time.perf_counter() - started
        metrics = json.loads((Path(tmp) / "r" / "metrics.json").read_text())
    rows = metrics["rounds"]
    up = [[m["bytes-up"] for m in r["client_metrics"]] for r in rows[1:]]
    return {
        "variant": variant, "partitioner": partitioner, "seed": seed, "seconds": seconds,
        "accuracy": [r["accuracy"] for r in rows],
        "client_accuracy": [r["client_accuracy"] for r in rows[1:]],
        "bytes_up_per_reply": up,
        "expected_bytes_up": [reply_bytes(setting, r) for r in range(1, rounds + 1)],
        "bytes_down_per_client": rows[1]["bytes_down"] // rows[1]["clients"],
    }  # fmt: skip


def main() -> None:
    """Run every variant × partitioner × seed; write the runs and print a summary table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/lora-variants.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    runs = [one_run(v, p, s, args.rounds) for p in PARTITIONERS for v in args.variants
            for s in args.seeds]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": args.rounds, "nodes": NODES, "runs": runs},
                                   indent=1) + "\n")  # fmt: skip
    fedavg_up = {r["seed"]: r["expected_bytes_up"][0] for r in runs if r["variant"] == "fedavg"}
    print("| partitioner | variant | global acc | clients' acc | uplink/reply r1, r2 (B) "
          "| = expected | vs fedavg |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for p in PARTITIONERS:
        for v in args.variants:
            group = [r for r in runs if r["partitioner"] == p and r["variant"] == v]
            glob = [r["accuracy"][-1] for r in group]
            local = [r["client_accuracy"][-1] for r in group]
            up = group[0]["bytes_up_per_reply"]
            exact = all(all(b == e for b in per) for r in group
                        for per, e in zip(r["bytes_up_per_reply"], r["expected_bytes_up"],
                                          strict=True))  # fmt: skip
            base = fedavg_up.get(group[0]["seed"])
            share = group[0]["expected_bytes_up"][0] / base if base else float("nan")
            sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
            print(f"| {p} | {v} | {statistics.mean(glob):.3f} ± {sd(glob):.3f} | "
                  f"{statistics.mean(local):.3f} ± {sd(local):.3f} | {up[0][0]:,}, "
                  f"{up[1][0]:,} | {exact} | {share:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
