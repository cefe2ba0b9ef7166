"""The baseline of ``benchmarks/throughput``: FedAvg as a plain sequential PyTorch loop.

    .venv/bin/python -m benchmarks.plain_loop --num-clients 4 -c "server.num-rounds=2" --out r.json

Same run config, same model, same partitions, same per-client seeds and the same
local training function as the ClientApp, but one process trains every client of
a round in turn and averages their tensors in memory: no Flower, no Ray, no
serialisation. It writes the per-round training time and image count as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from fedpeft.arrays import trainable_state
from fedpeft.config import RunConfig, parse_run_config
from fedpeft.config import app_config as flat_app_config
from fedpeft.data import ImageTensors, load_partition, load_test
from fedpeft.device import set_threads
from fedpeft.engine import Engine, make_engine
from fedpeft.model import build_model
from fedpeft.training import client_seed, evaluate, train_local

ROOT = Path(__file__).resolve().parents[1]


def app_config(overrides: list[str]) -> RunConfig:
    """The app's run config: pyproject defaults fused with ``--run-config`` strings."""
    return parse_run_config(flat_app_config(ROOT, overrides))


def fedavg_round(
    model: torch.nn.Module, glob: dict[str, torch.Tensor], parts: Mapping[int, ImageTensors],
    cfg: RunConfig, engine: Engine, server_round: int,
    on_client: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> tuple[dict[str, torch.Tensor], int]:  # fmt: skip
    """Train every partition (id → images) from ``glob`` in turn (the ClientApp's seeds and
    training) and average by examples; the model is left holding the average. Returns it
    and the count. ``on_client(partition, trained tensors)`` sees each client's reply.
    """
    total = {k: torch.zeros_like(v) for k, v in glob.items()}
    examples = 0
    for pid, data in parts.items():
        model.load_state_dict(glob, strict=False)
        seed = client_seed(cfg.seed, server_round, pid)
        out = train_local(model, data, cfg.train, cfg.lr, seed, engine)
        if on_client is not None:
            on_client(pid, trainable_state(model))
        for k, v in trainable_state(model).items():
            total[k] += v * out.num_examples
        examples += out.num_examples
    glob = {k: v / examples for k, v in total.items()}
    model.load_state_dict(glob, strict=False)
    return glob, examples


def run(cfg: RunConfig, num_clients: int) -> dict:
    """Train every client of every round sequentially; time the training phase."""
    start = time.perf_counter()
    test = load_test(cfg.data, cfg.seed, cfg.model.img_size)
    model = build_model(cfg.model, cfg.peft, test.num_classes, cfg.seed)
    set_threads(cfg.train.num_threads)
    engine = make_engine(model, cfg.train.device, cfg.train.precision, cfg.train.augment)
    parts = {
        pid: load_partition(cfg.data, cfg.seed, cfg.model.img_size, pid, num_clients)
        for pid in range(num_clients)
    }
    glob = {k: v.clone() for k, v in trainable_state(model).items()}
    rounds = []
    for server_round in range(1, cfg.server.num_rounds + 1):
        t0 = time.perf_counter()
        glob, examples = fedavg_round(model, glob, parts, cfg, engine, server_round)
        images = examples * cfg.train.epochs
        seconds = time.perf_counter() - t0
        acc = evaluate(model, test, cfg.server.eval_batch_size, engine).accuracy
        rounds.append({"round": server_round, "images": images, "train_seconds": seconds,
                       "accuracy": acc})  # fmt: skip
    return {
        "rounds": rounds,
        "wall_seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-clients", type=int, required=True)
    parser.add_argument("-c", "--run-config", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = run(app_config(args.run_config), args.num_clients)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
