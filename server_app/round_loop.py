"""The run's loop over rounds: round 0, then each :class:`~server_app.round.Round`.

Flower's ``Strategy.start`` loop, plus starting at a later round (resume), closing every
round (central evaluation, record, checkpoint: :meth:`Round.close`) and stopping after
too many failed rounds (:class:`~server_app.failures.FailedRounds`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from .round import Closing, Round
from .rounds import RoundStats

log = logging.getLogger(__name__)


def run_rounds(
    steps: Round,
    grid: Grid,
    initial_arrays: ArrayRecord,
    num_rounds: int,
    timeout: float,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    closing: Closing,
    first_round: int = 1,
    on_round_end: Callable[[int, ArrayRecord], None] | None = None,
    rounds: dict[int, RoundStats] | None = None,
) -> Result:
    """Run rounds ``first_round`` … ``num_rounds`` of ``steps``; Flower's result.

    Round 0 (the initial arrays, and FedNCM's counts if ``rounds`` has a round 0) is
    closed only when starting at round 1. After each round is closed ``on_round_end``
    sees its arrays; then :class:`~server_app.failures.RoundsFailedError` stops the run
    after ``server.max-failed-rounds`` consecutive failed rounds. ``rounds`` collects
    each round's :class:`RoundStats`.
    """
    rounds = {} if rounds is None else rounds
    result = Result(arrays=initial_arrays)
    arrays = initial_arrays
    if first_round == 1:
        evaluation = steps.close(0, arrays, rounds.get(0), closing)
        if evaluation is not None:
            result.evaluate_metrics_serverapp[0] = evaluation
    for server_round in range(first_round, num_rounds + 1):
        log.info("[ROUND %d/%d]", server_round, num_rounds)
        stats = rounds[server_round] = RoundStats()
        trained = steps.train(grid, server_round, arrays, ConfigRecord(dict(train_config)),
                              timeout, stats)  # fmt: skip
        if trained.arrays is not None:
            arrays = result.arrays = trained.arrays
        if trained.metrics is not None:
            result.train_metrics_clientapp[server_round] = trained.metrics
        if steps.evaluate_clients is not None:
            clients = steps.evaluate_clients(grid, server_round, arrays, evaluate_config,
                                             timeout, stats)  # fmt: skip
            if clients is not None:
                result.evaluate_metrics_clientapp[server_round] = clients
        evaluation = steps.close(server_round, arrays, stats, closing)
        if evaluation is not None:
            result.evaluate_metrics_serverapp[server_round] = evaluation
        if on_round_end:
            on_round_end(server_round, arrays)
        steps.failures.stop(stats.failure)
    return result
