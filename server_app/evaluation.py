"""Central evaluation of the global model each round, with health checks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from flwr.app import ArrayRecord, MetricRecord
from torch import nn

from fedpeft.arrays import load_trainable
from fedpeft.data.tensors import ImageTensors
from fedpeft.training import evaluate

from .results import RunRecorder
from .strategy import PeftFedAvg, RoundStats

log = logging.getLogger(__name__)

# Accuracy within this margin of 1/num_classes counts as "at chance".
CHANCE_MARGIN = 0.02


def make_evaluate_fn(
    model: nn.Module,
    test: ImageTensors,
    batch_size: int,
    strategy: PeftFedAvg,
    recorder: RunRecorder,
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Build Flower's ``evaluate_fn``: evaluate, log, account bytes and record the round."""
    chance = 1.0 / test.num_classes
    last = {"time": time.perf_counter()}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        load_trainable(model, arrays)
        outcome = evaluate(model, test, batch_size)
        trained = server_round in strategy.rounds  # round 0 is evaluation only
        stats = strategy.rounds.get(server_round, RoundStats())
        now = time.perf_counter()
        row = {
            "round": server_round,
            "accuracy": outcome.accuracy,
            "loss": outcome.loss,
            "clients": stats.sent_to,
            "accepted": stats.accepted,
            "rejected": len(stats.rejected),
            "failed": len(stats.errors),
            "no_reply": stats.sent_to - stats.accepted - len(stats.rejected) - len(stats.errors),
            "bytes_down": stats.bytes_down,
            "bytes_up": stats.bytes_up,
            "theoretical_down": stats.theoretical_down,
            "theoretical_up": stats.theoretical_up,
            "payload_up": stats.payload_up,
            "wall_seconds": now - last["time"],
            "train_seconds": stats.train_seconds,
            "failed_round": bool(stats.failure),
        }
        last["time"] = now
        before = recorder.rows[-1]["cum_bytes"] if recorder.rows else 0
        row["cum_bytes"] = before + row["bytes_down"] + row["bytes_up"]
        row["diverged"] = not math.isfinite(outcome.loss)
        row["at_chance"] = server_round > 0 and outcome.accuracy <= chance + CHANCE_MARGIN
        if trained:
            # keyed by partition id (node ids change every run)
            row["rejections"] = {strategy.nodes.label(k): v for k, v in stats.rejected.items()}
            row["errors"] = {strategy.nodes.label(k): v for k, v in stats.errors.items()}
            row["no_reply_partitions"] = [strategy.nodes.label(n) for n in stats.silent]
            row["client_metrics"] = stats.client_metrics
            row["weights"] = stats.weights
            row["update_norms"] = stats.update_norms
            row["failure"] = stats.failure
            row.update(stats.dp)  # dp_epsilon (central) / dp_epsilon_max (local), cumulative
        recorder.add(row)
        log.info(
            "round %d: server accuracy %.4f, loss %.4f | bytes down %s (theory %s), "
            "up %s (theory %s), cumulative %s",
            server_round, outcome.accuracy, outcome.loss,
            f"{row['bytes_down']:,}", f"{row['theoretical_down']:,}",
            f"{row['bytes_up']:,}", f"{row['theoretical_up']:,}", f"{row['cum_bytes']:,}",
        )  # fmt: skip
        if row["diverged"]:
            log.warning(
                "round %d: DIVERGED - the global model's loss is NaN/Inf; lower the learning rate",
                server_round,
            )
        elif row["at_chance"]:
            log.warning(
                "round %d: accuracy %.4f is at chance level (%.4f)",
                server_round,
                outcome.accuracy,
                chance,
            )
        return MetricRecord(
            {
                "accuracy": outcome.accuracy,
                "loss": outcome.loss,
                "diverged": int(row["diverged"]),
                "at-chance": int(row["at_chance"]),
            }
        )

    return evaluate_fn
