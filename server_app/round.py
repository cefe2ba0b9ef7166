"""One server round, composed of named steps in the order they run.

sample → configure → send (:mod:`~server_app.downlink`) → check each reply
(:mod:`~server_app.reply_check`) → guard (:mod:`~server_app.guard`) → tally
(:mod:`~server_app.tally`) → aggregate, rule or central DP (with ``secagg.enabled``,
SecAgg+ :mod:`~server_app.secagg` in place of check … aggregate) → server optimizer
(:mod:`~server_app.aggregate`) → restore the tensors not sent up
(:mod:`~server_app.uplink_keys`) → failed-round count (:mod:`~server_app.failures`)
→ client evaluation (:mod:`~server_app.client_eval`) → central evaluation → record
(:mod:`~server_app.recorder`) → checkpoint (:mod:`~server_app.checkpoint`).

What was sent (:class:`~server_app.rounds.Sent`) and the round's counts
(:class:`~server_app.rounds.RoundStats`) are values handed from step to step. Each step
with state keeps its own (``state()`` / ``load_state()``); :meth:`Round.state` gathers
them for the checkpoint. Adding a step is one object and one line here.
:func:`run_rounds` is the run's loop over rounds (Flower's ``Strategy.start`` loop, plus
round 0, resuming at a later round and stopping after too many failed rounds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from fedpeft import protocol
from fedpeft.arrays import Arrays

from .aggregate import Aggregate, Optimize
from .client_eval import ClientEvaluation
from .downlink import Configure, Send
from .failures import FailedRounds
from .guard import Screen
from .reply_check import Candidate, CheckReplies, reject
from .rounds import RoundEnd, RoundStats, Sent
from .sampling import Sample
from .secagg import SecureAggregation
from .tally import Tally
from .uplink_keys import UplinkKeys

if TYPE_CHECKING:
    from .checkpoint import Checkpointer
    from .recorder import RunRecorder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trained:
    """What a round's training steps made: the next global arrays (``None``: the round
    failed), the clients' aggregated metrics and the accepted replies in partition order.
    """  # noqa: D205

    arrays: ArrayRecord | None
    metrics: MetricRecord | None
    accepted: list[Candidate]


@dataclass(frozen=True)
class Closing:
    """The steps after a round's training, given per run: central evaluation (Flower's
    ``evaluate_fn``), the recorder and the checkpoint (each ``None``: skipped).
    """  # noqa: D205

    evaluate: Callable[[int, ArrayRecord], MetricRecord | None] | None = None
    record: RunRecorder | None = None
    checkpoint: Checkpointer | None = None


@dataclass(frozen=True)
class Round:
    """The steps of a training round, in order (see the module doc)."""

    sample: Sample
    configure: Configure
    send: Send
    check: CheckReplies
    screen: Screen
    tally: Tally
    aggregate: Aggregate
    optimize: Optimize
    carried: UplinkKeys
    failures: FailedRounds
    evaluate_clients: ClientEvaluation | None
    metrics: Callable[[list[RecordDict]], MetricRecord | None]
    secure: SecureAggregation | None = None  # secagg.enabled: replaces check … aggregate

    def start(self, grid: Grid, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
              stats: RoundStats) -> Sent:  # fmt: skip
        """Sample, configure and build the round's messages (sample → configure → send)."""
        self.send.refuse_extra(arrays)
        node_ids = self.sample(grid, server_round)
        config = self.configure(server_round, config, stats)
        sent = self.send(node_ids, arrays, config, protocol.TRAIN, server_round, stats)
        stats.population = len(list(grid.get_node_ids()))
        log.info("round %d: sampled partitions %s", server_round,
                 self.sample.nodes.partitions(node_ids))  # fmt: skip
        return sent

    def finish(self, server_round: int, replies: Iterable[Message], sent: Sent | None,
               stats: RoundStats) -> Trained:  # fmt: skip
        """Check, guard, tally, aggregate and optimise (``sent``: what :meth:`start` sent)."""
        walked = self.check(server_round, list(replies), sent, stats)
        carried = self.carried.of(server_round)
        sent_up = {k: sent.arrays[k] for k in carried} if sent else None
        accepted = self.screen([a.value for a in walked.accepted], sent_up, stats,
                               lambda node, why: reject(server_round, stats, self.check.nodes,
                                                        node, why))  # fmt: skip
        accepted = self.tally(server_round, walked, accepted, sent and sent.messages, stats)
        aggregated = self.aggregate(server_round, [c.update for c in accepted], sent, stats)
        record = None
        if aggregated is not None:
            record = self._next_global(server_round, aggregated, sent, stats)
        stats.train_seconds = time.perf_counter() - stats.started
        if record is None:
            return Trained(None, None, accepted)
        return Trained(record, self.metrics([c.message.content for c in accepted]), accepted)

    def _next_global(self, server_round: int, aggregated: Arrays, sent: Sent | None,
                     stats: RoundStats) -> ArrayRecord:  # fmt: skip
        aggregated = self.optimize(server_round, aggregated, sent)
        aggregated.update(self.carried.resting(server_round, sent and sent.arrays))
        stats.aggregated = True
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in aggregated.items()})

    def train(self, grid: Grid, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
              timeout: float, stats: RoundStats) -> Trained:  # fmt: skip
        """The training steps of one round, then the failed-round count."""
        sent = self.start(grid, server_round, arrays, config, stats)
        if self.secure is not None:
            trained = self.finish_secure(grid, server_round, sent, timeout, stats)
        else:
            replies = grid.send_and_receive(sent.messages, timeout=timeout)
            trained = self.finish(server_round, replies, sent, stats)
        self.failures(trained.arrays)
        return trained

    def finish_secure(self, grid: Grid, server_round: int, sent: Sent, timeout: float,
                      stats: RoundStats) -> Trained:  # fmt: skip
        """SecAgg+ (:mod:`~server_app.secagg`) in place of check … aggregate, then optimise."""
        assert self.secure is not None
        aggregated = self.secure(grid, server_round, sent, timeout, stats)
        record = None
        if aggregated is not None:
            record = self._next_global(server_round, aggregated, sent, stats)
        stats.train_seconds = time.perf_counter() - stats.started
        return Trained(record, None, [])

    def close(self, server_round: int, arrays: ArrayRecord, stats: RoundStats | None,
              closing: Closing) -> MetricRecord | None:  # fmt: skip
        """Central evaluation → record → checkpoint of a round (round 0: the initial arrays).

        Returns the central evaluation (``None``: not evaluated this round).
        """
        evaluation = closing.evaluate(server_round, arrays) if closing.evaluate else None
        if closing.record is not None:
            counts = stats.record_fields(self.sample.nodes.label) if stats else {}
            end = RoundEnd(server_round, arrays, evaluation or MetricRecord(), counts,
                           self.state(), self.state_arrays())  # fmt: skip
            closing.record.round_end(end)
            if closing.checkpoint is not None:
                closing.checkpoint.save(end, closing.record.rows, closing.record.best)
        return evaluation

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the steps, as JSON."""
        return {**self.failures.state(), **self.tally.state(), **self.aggregate.state()}

    def state_arrays(self) -> Arrays:
        """What a checkpoint keeps of the steps, as tensors (the optimizer's moments)."""
        return self.optimize.state_arrays()

    def load_state(self, state: dict[str, Any], arrays: Arrays | None = None) -> None:
        """Restore :meth:`state` and :meth:`state_arrays`."""
        self.optimize.load_state_arrays(arrays or {})
        for step in (self.failures, self.tally, self.aggregate):
            step.load_state(state)


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
