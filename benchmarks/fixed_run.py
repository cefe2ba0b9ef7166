"""A fixed short federated run in one process, for choosing defaults (run by hand).

    .venv/bin/python -m benchmarks.fixed_run --partitions 10 --clients 5 --rounds 4 \\
        -c "data.train-size=4000 peft.lora.lr=0.005 seed=1 train.precision='bf16'"

FedAvg of the first ``--clients`` of ``--partitions`` partitions, every one every round,
with the ClientApp's training function, engine and client seeds; ``--ncm`` first sets
the head to the clients' normalised class means (FedNCM, as ``peft.head.init=ncm``).
Prints and writes the server accuracy after each round (round 0: before training) and
the wall time. docs/BENCHMARKS.md ("Default job", "Engine") quotes its runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.plain_loop import app_config, fedavg_round
from fedpeft.arrays import trainable_state
from fedpeft.data import load_partition, load_test
from fedpeft.device import set_threads
from fedpeft.engine import make_engine
from fedpeft.model import build_model
from fedpeft.ncm import class_feature_sums, ncm_head
from fedpeft.training import evaluate
from server_app.ncm import head_keys


def run(overrides: list[str], partitions: int, clients: int, rounds: int, ncm: bool) -> dict:
    """Accuracy per round of the fixed run (see the module doc)."""
    start = time.perf_counter()
    cfg = app_config(overrides)
    set_threads(cfg.train.num_threads)
    test = load_test(cfg.data, cfg.seed, cfg.model.img_size)
    model = build_model(cfg.model, cfg.peft, test.num_classes, cfg.seed)
    engine = make_engine(model, cfg.train.device, cfg.train.precision, cfg.train.augment)
    size = cfg.model.img_size
    parts = {p: load_partition(cfg.data, cfg.seed, size, p, partitions) for p in range(clients)}
    if ncm:
        bs = cfg.server.eval_batch_size
        stats = [class_feature_sums(model, d, bs, engine) for d in parts.values()]
        weight, bias = ncm_head(sum(s for s, _ in stats), sum(c for _, c in stats))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, value in zip(head_keys(model), (weight, bias), strict=True):
                params[key].copy_(torch.from_numpy(np.asarray(value)))
    glob = {k: v.clone() for k, v in trainable_state(model).items()}
    accuracy = [evaluate(model, test, cfg.server.eval_batch_size, engine).accuracy]
    for server_round in range(1, rounds + 1):
        glob, _ = fedavg_round(model, glob, parts, cfg, engine, server_round)
        accuracy.append(evaluate(model, test, cfg.server.eval_batch_size, engine).accuracy)
    return {"run_config": overrides, "ncm": ncm, "precision": engine.precision.name,
            "accuracy": accuracy, "wall_seconds": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--run-config", action="append", default=[])
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--ncm", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args.run_config, args.partitions, args.clients, args.rounds, args.ncm)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
