"""Central evaluation of the global model, shaped like Flower's ``global_evaluate``."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, MetricRecord
from torch import nn

from fedpeft.data.tensors import ImageTensors
from fedpeft.engine import Engine
from fedpeft.sharing import load_shared
from fedpeft.training import evaluate
from peft_strategies.base import Sharing


def make_evaluate_fn(
    model: nn.Module,
    test: ImageTensors,
    batch_size: int,
    engine: Engine,
    cache: bool = True,
    sharing: Sharing | None = None,
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Flower's ``evaluate_fn``: the global model's accuracy and loss on the test split.

    On ``engine``'s device (``server.device``); a head-only model is evaluated on the
    test split's features, computed once (``cache``: ``train.feature-cache``). With a
    method that keeps tensors on the clients (``sharing``: FedSA-LoRA's B), the global
    model has them at their initial values.
    """
    sharing = sharing or Sharing()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        load_shared(model, arrays, sharing)
        outcome = evaluate(model, test, batch_size, engine, cache)
        return MetricRecord({"accuracy": outcome.accuracy, "loss": outcome.loss})

    return evaluate_fn
