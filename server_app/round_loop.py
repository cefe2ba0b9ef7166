"""The round loop of :class:`~server_app.strategy.PeftFedAvg`: resume, record, stop on failures.

Flower's ``Strategy.start`` loop, plus starting at a later round (resume), handing
every evaluated round to a recorder, and stopping after too many failed rounds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from .rounds import RoundEnd, RoundStats

log = logging.getLogger(__name__)


class RoundsFailedError(RuntimeError):
    """Too many consecutive rounds without enough valid replies."""


class RoundRecorder(Protocol):
    """Receives each evaluated round (:class:`~server_app.recorder.RunRecorder`)."""

    def round_end(self, end: RoundEnd) -> None:
        """Record (and checkpoint) one round."""


class RoundLoop:
    """Mixin for a Flower strategy that keeps ``rounds`` (:class:`RoundStats` by round),
    ``nodes`` (partition labels), ``failed_streak``, ``max_failed_rounds``, ``state()``
    and ``state_arrays()``.
    """  # noqa: D205

    rounds: dict[int, RoundStats]
    failed_streak: int
    max_failed_rounds: int

    def start(  # type: ignore[override]
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        *,
        first_round: int = 1,
        recorder: RoundRecorder | None = None,
        on_round_end: Callable[[int, ArrayRecord], None] | None = None,
    ) -> Result:
        """Flower's round loop, plus resuming at ``first_round`` and failed-round handling.

        Round 0 (evaluation of the initial arrays) runs only when starting at
        round 1. After each round's evaluation the loop hands the round's counts,
        the evaluation and the strategy's state to ``recorder`` (which writes the
        results and the checkpoint), then calls ``on_round_end``. Raises
        :class:`RoundsFailedError` after ``max_failed_rounds`` consecutive failed
        rounds, once that round is recorded.
        """
        train_config = train_config or ConfigRecord()
        evaluate_config = evaluate_config or ConfigRecord()
        result = Result(arrays=initial_arrays)
        arrays = initial_arrays
        if first_round == 1:
            self._evaluated(0, arrays, evaluate_fn, result, recorder)
        for server_round in range(first_round, num_rounds + 1):
            log.info("[ROUND %d/%d]", server_round, num_rounds)
            messages = self.configure_train(
                server_round, arrays, ConfigRecord(dict(train_config)), grid
            )
            replies = grid.send_and_receive(messages, timeout=timeout)
            aggregated, metrics = self.aggregate_train(server_round, replies)
            self.failed_streak = 0 if aggregated is not None else self.failed_streak + 1
            if aggregated is not None:
                arrays = result.arrays = aggregated
            if metrics is not None:
                result.train_metrics_clientapp[server_round] = metrics
            if self.fraction_evaluate > 0:
                eval_msgs = self.configure_evaluate(server_round, arrays, evaluate_config, grid)
                eval_replies = grid.send_and_receive(eval_msgs, timeout=timeout)
                agg_eval = self.aggregate_evaluate(server_round, eval_replies)
                if agg_eval is not None:
                    result.evaluate_metrics_clientapp[server_round] = agg_eval
            self._evaluated(server_round, arrays, evaluate_fn, result, recorder)
            if on_round_end:
                on_round_end(server_round, arrays)
            if self.failed_streak >= self.max_failed_rounds:
                raise RoundsFailedError(
                    f"{self.failed_streak} consecutive failed rounds (server.max-failed-rounds="
                    f"{self.max_failed_rounds}); last: {self.rounds[server_round].failure}"
                )
        return result

    def _evaluated(
        self,
        server_round: int,
        arrays: ArrayRecord,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None,
        result: Result,
        recorder: RoundRecorder | None,
    ) -> None:
        evaluation = evaluate_fn(server_round, arrays) if evaluate_fn else None
        if evaluation is not None:
            result.evaluate_metrics_serverapp[server_round] = evaluation
        if recorder is not None:
            stats = self.rounds.get(server_round)  # round 0: only if FedNCM ran
            counts = stats.record_fields(self.nodes.label) if stats else {}
            recorder.round_end(RoundEnd(server_round, arrays, evaluation or MetricRecord(),
                                        counts, self.state(), self.state_arrays()))  # fmt: skip
