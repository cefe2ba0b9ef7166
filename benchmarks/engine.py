"""The training engine on this machine (run by hand; results in docs/BENCHMARKS.md, "Engine").

    .venv/bin/python -m benchmarks.engine --out docs/results/engine.json

Three measurements, each side by side in one run (the machines are noisy):

* ``speed``: per PEFT method, local-training and evaluation images/s of the offline
  ViT-S/14 in fp32 and bf16 (``train.precision``), interleaved, and the bf16/fp32 ratio;
* ``head``: one head-only client round on its partition with the feature cache
  (its first round computes the features, later rounds reuse them) and without;
* ``memory``: peak RSS of a worker process holding a CIFAR-sized partition (50,000
  synthetic 32 px RGB images) for a 224 px model, stored at 224 px (every image resized
  when loaded) and at the source's 32 px (as the data pipeline stores it); each in a
  fresh child process.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.plain_loop import app_config
from fedpeft.data.tensors import ImageTensors
from fedpeft.device import resolve_device, set_threads
from fedpeft.engine import make_engine
from fedpeft.model import build_model
from fedpeft.training import evaluate, train_local
from peft_strategies import method_names

log = logging.getLogger("benchmarks.engine")


def synthetic_images(n: int, size: int, seed: int = 0) -> ImageTensors:
    """``n`` random ``size`` px greyscale uint8 images and labels of 10 classes (seeded)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageTensors(images, labels, 10, f"synthetic-{n}-{seed}")


def _train_seconds(model, data, cfg, seed, engine) -> float:
    start = time.perf_counter()
    train_local(model, data, cfg.train, cfg.lr, seed, engine)
    return time.perf_counter() - start


def _eval_seconds(model, data, engine, batch_size: int = 64) -> float:
    start = time.perf_counter()
    evaluate(model, data, batch_size, engine)
    return time.perf_counter() - start


def measure(
    overrides: list[str], method: str, precision: str, n_train: int, n_eval: int,
    eval_batch: int = 64,
) -> dict:  # fmt: skip
    """Train and eval img/s of one method at one precision on synthetic 28 px images.

    A fresh model; one warm-up round of one batch first. On a GPU also the peak
    allocated and reserved memory (MiB) of the timed train and eval, measured from the
    model alone (the last measurement's blocks are given back first); elsewhere ``None``.
    The head method's training includes its feature pass (a first round's cost).
    """
    cfg = app_config([*overrides, f"peft.method='{method}' train.precision='{precision}'"])
    gpu = resolve_device(cfg.train.device, "train.device").type == "cuda"
    if gpu:  # what the last row left cached would count towards this row's peak
        gc.collect()
        torch.cuda.empty_cache()
    model = build_model(cfg.model, cfg.peft, 10, cfg.seed)
    engine = make_engine(model, cfg.train.device, precision)
    train_local(model, synthetic_images(cfg.train.batch_size, 28), cfg.train, cfg.lr, 0, engine)
    if gpu:
        torch.cuda.reset_peak_memory_stats(engine.device)
    t = _train_seconds(model, synthetic_images(n_train, 28), cfg, 1, engine)
    e = _eval_seconds(model, synthetic_images(n_eval, 28, 1), engine, eval_batch)
    out = {"train_img_s": n_train / t, "eval_img_s": n_eval / e,
           "peak_allocated_mib": None, "peak_reserved_mib": None}  # fmt: skip
    if gpu:
        out["peak_allocated_mib"] = torch.cuda.max_memory_allocated(engine.device) / 2**20
        out["peak_reserved_mib"] = torch.cuda.max_memory_reserved(engine.device) / 2**20
    return out


def speed(overrides: list[str], methods: list[str], n_train: int, n_eval: int) -> list[dict]:
    """Train and eval img/s per method, fp32 and bf16 interleaved (:func:`measure`)."""
    rows = []
    for method in methods:
        row: dict = {"method": method}
        for precision in ("fp32", "bf16"):
            m = measure(overrides, method, precision, n_train, n_eval)
            row[precision] = {"train_img_s": m["train_img_s"], "eval_img_s": m["eval_img_s"]}
            if m["peak_allocated_mib"] is not None:
                row[precision]["peak_gpu_mib"] = m["peak_allocated_mib"]
                row[precision]["peak_reserved_mib"] = m["peak_reserved_mib"]
        row["train_ratio"] = row["bf16"]["train_img_s"] / row["fp32"]["train_img_s"]
        row["eval_ratio"] = row["bf16"]["eval_img_s"] / row["fp32"]["eval_img_s"]
        log.info("%s: %s", method, row)
        rows.append(row)
    return rows


def head_round(overrides: list[str], n: int, rounds: int) -> dict:
    """Seconds per head-only client round, cached (first and later rounds) vs uncached."""
    out = {}
    for cache in (True, False):
        cfg = app_config(
            [*overrides, f"peft.method='head' train.feature-cache={str(cache).lower()}"]
        )
        model = build_model(cfg.model, cfg.peft, 10, cfg.seed)
        engine = make_engine(model, cfg.train.device, cfg.train.precision)
        data = synthetic_images(n, 28, 2)
        times = [_train_seconds(model, data, cfg, r, engine) for r in range(rounds)]
        out["cached" if cache else "uncached"] = times
    out["later_round_fraction"] = float(np.mean(out["cached"][1:]) / np.mean(out["uncached"]))
    log.info("head rounds: %s", out)
    return out


CHILD = """
import json, resource, sys, numpy as np
from PIL import Image
from fedpeft.data.tensors import to_uint8
n, stored = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
if stored > 32:  # stored at the model's size: every image resized when loaded
    images = [img.resize((stored, stored), Image.Resampling.BICUBIC) for img in images]
    # (to_uint8 caps at the source's size, here the model's)
arr = to_uint8(images, stored)
print(json.dumps({"stored": list(arr.shape), "tensor_mib": arr.nbytes / 2**20,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory(n: int, model_size: int) -> dict:
    """Peak RSS (MiB) of a child holding ``n`` CIFAR-sized images stored at each size."""
    out = {}
    for label, stored in (("before_model_size", model_size), ("now_source_size", 32)):
        res = subprocess.run([sys.executable, "-c", CHILD, str(n), str(stored)], check=True,
                             capture_output=True, text=True)  # fmt: skip
        out[label] = json.loads(res.stdout.strip().splitlines()[-1])
        log.info("memory %s: %s", label, out[label])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--run-config", action="append", default=[])
    parser.add_argument("--methods", nargs="+", default=method_names())
    parser.add_argument("--train-images", type=int, default=160)
    parser.add_argument("--eval-images", type=int, default=320)
    parser.add_argument("--head-images", type=int, default=400)
    parser.add_argument("--memory-images", type=int, default=50_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed", "head", "memory"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = app_config(args.run_config)
    where = resolve_device(cfg.train.device, "train.device")
    result: dict = {"run_config": args.run_config, "img_size": cfg.model.img_size,
                    "device": torch.cuda.get_device_name() if where.type == "cuda" else str(where),
                    "threads": set_threads(cfg.train.num_threads),
                    "torch": torch.__version__}  # fmt: skip
    if "speed" not in args.skip:
        result["speed"] = speed(args.run_config, args.methods, args.train_images, args.eval_images)
    if "head" not in args.skip:
        result["head_round_seconds"] = head_round(args.run_config, args.head_images, 3)
    if "memory" not in args.skip:
        result["memory_224px"] = memory(args.memory_images, 224)
    result["peak_rss_mib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
