"""What a checkpoint keeps of :class:`~server_app.strategy.PeftFedAvg`, and its restore.

JSON state (the failed-round streak, local DP's ε per client, a rule's state such as
central DP's accountant) and tensor state (the server optimizer's moments, kept in the
checkpoint's safetensors body), so that a resumed run continues bit-identically.
"""

from __future__ import annotations

from typing import Any

from fedpeft.aggregation import Aggregator
from fedpeft.arrays import Arrays
from fedpeft.server_opt import ServerOptimizer


class Resumable:
    """Mixin of :class:`~server_app.strategy.PeftFedAvg`: its checkpointed state."""

    failed_streak: int
    client_epsilon: dict[int, float]
    aggregator: Aggregator
    optimizer: ServerOptimizer | None

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep to resume the strategy."""
        state: dict[str, Any] = {"failed_streak": self.failed_streak}
        if self.client_epsilon:
            state["client_epsilon"] = {str(k): v for k, v in self.client_epsilon.items()}
        if rule_state := self.aggregator.state():
            state[self.aggregator.state_key] = rule_state
        return state

    def state_arrays(self) -> Arrays:
        """The state a checkpoint keeps as tensors (the server optimizer's moments)."""
        return {} if self.optimizer is None else self.optimizer.state()

    def load_state(self, state: dict[str, Any], arrays: Arrays | None = None) -> None:
        """Restore :meth:`state` and :meth:`state_arrays`."""
        if self.optimizer is not None:
            self.optimizer.load_state(arrays or {})
        self.failed_streak = int(state.get("failed_streak", 0))
        self.client_epsilon = {int(k): v for k, v in state.get("client_epsilon", {}).items()}
        if self.aggregator.state_key in state:
            self.aggregator.load_state(state[self.aggregator.state_key])
