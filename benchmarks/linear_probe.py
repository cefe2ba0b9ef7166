"""The frozen-feature linear probe the sweep's results are compared against.

    .venv/bin/python -m benchmarks.linear_probe -c conf/cpu-sweep.toml --seeds 1 2 \\
        --test-sizes 300 1000 --out docs/results/linear-probe.json

Centralised, not federated: the frozen backbone's pooled features (what ``head``
trains on) of the whole training pool (``data.train-size`` images, as one partition)
feed a scikit-learn logistic regression whose regularisation is picked by 5-fold
cross-validation on those training features only, then scored on the central test
split the ServerApp evaluates on, at each ``--test-sizes``, once per ``--seeds`` (the
seed picks the training pool and the test images, as in a run). Same config parsing,
data pipeline, preprocessing and seeded backbone as the app.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from fedpeft.config import RunConfig
from fedpeft.data import ImageTensors, load_partition, load_test
from fedpeft.engine import Engine, make_engine
from fedpeft.features import pooled_features
from fedpeft.model import build_model

from .plain_loop import app_config

log = logging.getLogger("benchmarks.linear_probe")
C_GRID = (0.001, 0.01, 0.1, 1.0)


def features(
    model: torch.nn.Module, data: ImageTensors, batch_size: int, engine: Engine
) -> np.ndarray:
    """Pooled pre-logit features of the frozen backbone, as the head-only clients see them."""
    return pooled_features(model, data, engine, batch_size).cpu().numpy()


def run(cfg: RunConfig, test_sizes: list[int]) -> dict:
    """Fit the probe on the training pool; score it on each test-split size.

    ``cfg.peft.method`` should be ``head`` (nothing but the classifier is attached).
    """
    start = time.perf_counter()
    train = load_partition(cfg.data, cfg.seed, cfg.model.img_size, 0, 1)
    model = build_model(cfg.model, cfg.peft, train.num_classes, cfg.seed)
    engine = make_engine(model, cfg.train.device, cfg.train.precision)
    x_train = features(model, train, cfg.server.eval_batch_size, engine)
    log.info("%d training features of dim %d", *x_train.shape)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        {"logisticregression__C": list(C_GRID)}, cv=5, scoring="accuracy",
    )  # fmt: skip
    with threadpool_limits(1):  # small BLAS calls: threads only contend (10× slower here)
        search.fit(x_train, train.labels.numpy())
    probe = search.best_estimator_
    result = {
        "model": cfg.model.name, "weights": cfg.model.weights, "img_size": cfg.model.img_size,
        "precision": engine.precision.name, "dataset": cfg.data.dataset,
        "train_images": len(train), "seed": cfg.seed,
        "C": float(search.best_params_["logisticregression__C"]),
        "train_accuracy": float(probe.score(x_train, train.labels.numpy())),
        "test": {},
    }  # fmt: skip
    for size in test_sizes:
        test = load_test(replace(cfg.data, test_size=size), cfg.seed, cfg.model.img_size)
        x_test = features(model, test, cfg.server.eval_batch_size, engine)
        acc = probe.score(x_test, test.labels.numpy())
        result["test"][str(size)] = {"images": len(test), "accuracy": float(acc)}
        log.info("linear probe: %.4f on %d test images", acc, len(test))
    result["wall_seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--run-config", action="append", default=[])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--test-sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = [
        run(app_config([*args.run_config, f"peft.method='head' seed={seed}"]), args.test_sizes)
        for seed in args.seeds
    ]
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
