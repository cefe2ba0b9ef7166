"""How skewed the clients' labels are under flwr-datasets' Dirichlet partitioner (run by hand).

    .venv/bin/python -m benchmarks.label_skew --out docs/results/label-skew.json \\
        -c conf/cpu-r2-elpv.toml --alphas 0.1 0.3 0.5 1.0 --seeds 1 2 3

For each α and seed, the app's own partitions (``load_partition``, ``data.partitioner =
'dirichlet'``, ``data.dirichlet.min-partition-size`` from the config) of ``--partitions``
clients: the mean over clients of the share of a client's images in its largest class
(1.0: every client holds one class), that share above the pool's as a fraction of
what is left above it (``skew_of_headroom``: 0 = IID, 1 = one class per client, comparable
between a 2-class and a 10-class task), the smallest and largest client, and the classes a
client holds on average; the pool's own majority share beside them. An α the partitioner
cannot draw (flwr-datasets gives up after 10 attempts at the minimum size) is recorded
with its error. docs/results/label-skew.json picks ELPV's α (conf/sweep-r2-elpv.toml).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.plain_loop import app_config
from fedpeft.data import load_partition


def skew(overrides: list[str], alpha: float, seed: int, partitions: int) -> dict:
    """One α and seed's label skew over ``partitions`` clients (see the module doc)."""
    cfg = app_config([*overrides, f"data.partitioner='dirichlet' data.dirichlet.alpha={alpha} "
                      f"seed={seed}"])  # fmt: skip
    try:
        labels = [load_partition(cfg.data, cfg.seed, cfg.model.img_size, p, partitions).labels
                  for p in range(partitions)]  # fmt: skip
    except ValueError as exc:  # flwr-datasets: "The max number of attempts (10) was reached"
        return {"alpha": alpha, "seed": seed, "error": str(exc)}
    counts = [np.bincount(y.numpy()) for y in labels]
    pool = np.bincount(np.concatenate([y.numpy() for y in labels]))
    share, pool_share = np.mean([c.max() / c.sum() for c in counts]), pool.max() / pool.sum()
    return {
        "alpha": alpha,
        "seed": seed,
        "majority_share": float(share),
        "pool_majority_share": float(pool_share),
        # comparable across class counts: 0 = the pool's mix, 1 = one class per client
        "skew_of_headroom": float((share - pool_share) / (1 - pool_share)),
        "min_size": int(min(c.sum() for c in counts)),
        "max_size": int(max(c.sum() for c in counts)),
        "classes_per_client": float(np.mean([(c > 0).sum() for c in counts])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--run-config", action="append", default=[])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = [skew(args.run_config, a, s, args.partitions) for a in args.alphas for s in args.seeds]
    for row in rows:
        print(json.dumps(row))
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[" ".join(args.run_config)] = rows  # one entry per config: ELPV and Fashion-MNIST
    args.out.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
