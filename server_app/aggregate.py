"""The aggregation steps: the rule (or central DP) over the accepted updates, then the
server optimizer.

:class:`Aggregate` needs ``server.min-replies`` accepted updates; a round with fewer, or
one the rule refuses (e.g. too few replies for Krum's f), fails and leaves the global
state unchanged. :class:`Optimize` applies the aggregate to the global arrays sent
(``server.optimizer``). Each keeps its state for the checkpoint: the rule's as JSON
(central DP's releases), the optimizer's moments as tensors.
"""  # noqa: D205

from __future__ import annotations

import logging
from typing import Any

from fedpeft.aggregation import Aggregator, Update
from fedpeft.arrays import Arrays
from fedpeft.server_opt import ServerOptimizer

from .rounds import RoundStats, Sent
from .uplink_keys import UplinkKeys

log = logging.getLogger(__name__)


class Aggregate:
    """The round's aggregate of the accepted updates (in partition order), or ``None``."""

    def __init__(self, aggregator: Aggregator, min_replies: int, carried: UplinkKeys) -> None:
        self.aggregator = aggregator
        self.min_replies = min_replies
        self.carried = carried

    def __call__(self, server_round: int, updates: list[Update], sent: Sent | None,
                 stats: RoundStats) -> Arrays | None:  # fmt: skip
        """Aggregate ``updates``; a failed round is recorded in ``stats`` and logged."""
        aggregated = None
        if len(updates) < self.min_replies:
            stats.failure = f"{len(updates)} valid replies, fewer than server.min-replies"
        else:
            sent_arrays = sent.arrays if sent else None
            updates = self.carried.complete(  # RoLoRA: the factor not sent up, as sent
                updates, self.carried.resting(server_round, sent_arrays)
            )
            try:
                aggregated, info = self.aggregator.aggregate(
                    updates, sent_arrays, stats.sent_to, stats.population, server_round
                )
            except ValueError as exc:  # e.g. too few replies for Krum's f
                stats.failure = str(exc)
            else:
                stats.dp.update(info)
        if aggregated is None:
            log.warning("round %d failed (%s); global state unchanged", server_round,
                        stats.failure)  # fmt: skip
        if not stats.dp:  # a failed round: what the rule records then (central DP: ε so far)
            stats.dp.update(self.aggregator.idle())
        return aggregated

    def state(self) -> dict[str, Any]:
        """The rule's state under its key (nothing for a stateless rule)."""
        rule_state = self.aggregator.state()
        return {self.aggregator.state_key: rule_state} if rule_state else {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        if self.aggregator.state_key in state:
            self.aggregator.load_state(state[self.aggregator.state_key])


class Optimize:
    """Applies the aggregate to the arrays sent (``server.optimizer``; ``None``: as is)."""

    def __init__(self, optimizer: ServerOptimizer | None = None) -> None:
        self.optimizer = optimizer

    def __call__(self, server_round: int, aggregated: Arrays, sent: Sent | None) -> Arrays:
        """The next global arrays from this round's aggregate."""
        if self.optimizer is None or sent is None:
            return aggregated
        return self.optimizer.step(server_round, sent.arrays, aggregated)

    def state_arrays(self) -> Arrays:
        """The optimizer's moments, kept as tensors in the checkpoint."""
        return {} if self.optimizer is None else self.optimizer.state()

    def load_state_arrays(self, arrays: Arrays) -> None:
        """Restore :meth:`state_arrays`."""
        if self.optimizer is not None:
            self.optimizer.load_state(arrays)
