"""LoRA federation variants side by side: accuracy (global and on the clients) and uplink.

    .venv/bin/python -m benchmarks.lora_variants --out docs/results/lora-variants.json

Runs the real ServerApp and ClientApp in this process (:func:`fedpeft.tools.inprocess.
run_in_process`: Flower's messages cross as protobuf bytes, each node keeps its own
``Context``), so one run costs its training, not a SuperLink and Ray. The setting is
the e2e tests' TINY one (the offline ViT-S/14 at 28 px on sklearn digits, 1,797
images, 10 classes), 3 clients all sampled, ``--rounds`` rounds, every client
evaluating each round on the fifth of its images it holds out. For each variant of
``peft.lora.federation``, partitioner and seed it records the global model's accuracy
on the central test split, the clients' accuracy on their held-out images (with their
local tensors: personalised for ``fedsa``), and the uplink bytes per reply each round,
measured on the wire, against the share of plain LoRA's factor bytes the variant sends.
``hetlora`` is plain LoRA with ``peft.lora.ranks='4,8'`` (HetLoRA: partitions 0 and 2
train rank 4, partition 1 the run's 8). ``--report`` prints the table of a saved JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from fedpeft.config import NodeConfig, app_config, parse_run_config
from fedpeft.hetlora import node_rank
from fedpeft.protocol import BYTES_UP
from fedpeft.run_folder import METRICS_JSON
from fedpeft.tools.inprocess import run_in_process
from tests.e2e.helpers import ROOT, TINY, reply_bytes

# variant → its run config (HetLoRA is fedavg with two of the three nodes at rank 4)
VARIANTS = {v: f"peft.lora.federation='{v}'" for v in ("fedavg", "ffa", "fedsa", "rolora")}
VARIANTS["hetlora"] = "peft.lora.federation='fedavg' peft.lora.ranks='4,8'"
PARTITIONERS = {"iid": "data.partitioner='iid'",
                "dirichlet-0.1": "data.partitioner='dirichlet' data.dirichlet.alpha=0.1 "
                                 "data.dirichlet.min-partition-size=20"}  # fmt: skip
EVAL = "server.fraction-evaluate=1.0 data.local-test-fraction=0.2"
NODES = 3


def one_run(variant: str, partitioner: str, seed: int, rounds: int) -> dict:
    """One in-process run's rows and its uplink per reply against the expected bytes."""
    setting = (f"{VARIANTS[variant]} {PARTITIONERS[partitioner]} {EVAL} "
               f"seed={seed} server.num-rounds={rounds}")  # fmt: skip
    cfg = app_config(ROOT, [TINY, setting])
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run_in_process(app_config(ROOT, [TINY, setting, f"output.dir='{tmp}' "
                                         "output.run-name='r'"]), NODES)  # fmt: skip
        seconds = time.perf_counter() - started
        metrics = json.loads((Path(tmp) / "r" / METRICS_JSON).read_text())
    rows = metrics["rounds"]
    pcfg = parse_run_config(cfg).peft
    ranks = [node_rank(pcfg, NodeConfig(partition_id=p)) for p in range(NODES)]  # by partition
    return {
        "variant": variant, "partitioner": partitioner, "seed": seed, "seconds": seconds,
        "ranks": [pcfg.params.r if k is None else k for k in ranks],
        "accuracy": [r["accuracy"] for r in rows],
        "client_accuracy": [r["client_accuracy"] for r in rows[1:]],
        "bytes_up_per_reply": [[m[BYTES_UP] for m in r["client_metrics"]] for r in rows[1:]],
        "expected_bytes_up": [[reply_bytes(setting, r, rank=k) for k in ranks]
                              for r in range(1, rounds + 1)],
    }  # fmt: skip


def table(runs: list[dict]) -> str:
    """The summary table: accuracy (mean ± sd over seeds) and the uplink against theory."""
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    mean_up = lambda r: statistics.mean(b for per in r["bytes_up_per_reply"] for b in per)  # noqa: E731
    fedavg = {(r["partitioner"], r["seed"]): mean_up(r) for r in runs if r["variant"] == "fedavg"}
    lines = ["| partitioner | variant | ranks | global acc | clients' acc "
             "| uplink / reply, r1; r2 (B) | = expected | vs fedavg |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in dict.fromkeys(r["partitioner"] for r in runs):
        for v in dict.fromkeys(r["variant"] for r in runs):
            group = [r for r in runs if r["partitioner"] == p and r["variant"] == v]
            if not group:
                continue
            glob = [r["accuracy"][-1] for r in group]
            local = [r["client_accuracy"][-1] for r in group]
            up = group[0]["bytes_up_per_reply"]
            exact = all(r["bytes_up_per_reply"] == r["expected_bytes_up"] for r in group)
            share = statistics.mean(mean_up(r) / fedavg[p, r["seed"]] for r in group)
            lines.append(
                f"| {p} | {v} | {', '.join(map(str, group[0]['ranks']))} "
                f"| {statistics.mean(glob):.3f} ± {sd(glob):.3f} "
                f"| {statistics.mean(local):.3f} ± {sd(local):.3f} "
                f"| {' / '.join(f'{b:,}' for b in sorted(set(up[0])))}; "
                f"{' / '.join(f'{b:,}' for b in sorted(set(up[1])))} "
                f"| {exact} | {share:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Run every variant × partitioner × seed; write the runs and print a summary table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/lora-variants.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--report", action="store_true", help="print the table of --out only")
    args = parser.parse_args()
    if args.report:
        print(table(json.loads(args.out.read_text())["runs"]))
        return
    logging.getLogger("flwr").setLevel(logging.WARNING)
    runs = [one_run(v, p, s, args.rounds) for p in PARTITIONERS for v in args.variants
            for s in args.seeds]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": args.rounds, "nodes": NODES, "runs": runs},
                                   indent=1) + "\n")  # fmt: skip
    print(table(runs))


if __name__ == "__main__":
    main()
