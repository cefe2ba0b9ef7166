"""Central evaluation of the global model, shaped like Flower's ``global_evaluate``."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, MetricRecord
from torch import nn

from fedpeft.arrays import load_trainable
from fedpeft.data.tensors import ImageTensors
from fedpeft.engine import Engine
from fedpeft.training import evaluate


def make_evaluate_fn(
    model: nn.Module, test: ImageTensors, batch_size: int, engine: Engine, cache: bool = True
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Flower's ``evaluate_fn``: the global model's accuracy and loss on the test split.

    On ``engine``'s device (``server.device``); a head-only model is evaluated on the
    test split's features, computed once (``cache``: ``train.feature-cache``).
    """

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        load_trainable(model, arrays)
        outcome = evaluate(model, test, batch_size, engine, cache)
        return MetricRecord({"accuracy": outcome.accuracy, "loss": outcome.loss})

    return evaluate_fn
