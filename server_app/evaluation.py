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
    every: int = 1,
    num_rounds: int = 0,
) -> Callable[[int, ArrayRecord], MetricRecord | None]:
    """Flower's ``evaluate_fn``: the global model's scores on the test split.

    Accuracy, loss, balanced accuracy and ROC AUC (``fedpeft.training.evaluate``).
    Evaluates round 0, every ``every``-th round and round ``num_rounds`` (the last);
    ``None`` for the rounds between (``server.evaluate-every``).

    On ``engine``'s device (``server.device``); a head-only model is evaluated on the
    test split's features, computed once (``cache``: ``train.feature-cache``). With a
    method that keeps tensors on the clients (``sharing``: FedSA-LoRA's B), the global
    model has them at their initial values.
    """
    sharing = sharing or Sharing()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round % every and server_round != num_rounds:
            return None
        load_shared(model, arrays, sharing)
        outcome = evaluate(model, test, batch_size, engine, cache, scores=True)
        return MetricRecord({"accuracy": outcome.accuracy, "loss": outcome.loss,
                             "balanced-accuracy": outcome.balanced_accuracy,
                             "auc": outcome.auc})  # fmt: skip

    return evaluate_fn
