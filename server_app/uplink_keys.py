"""What replies carry per round when a method sends part of its set (RoLoRA's factor).

The server sends every shared tensor down each round; a reply may carry only the
round's part. Replies are checked against that part; for aggregation each reply is
completed with the arrays sent (a zero update), so every rule and the central-DP
clipping see the same keys every round, and the tensors not sent up are then put back
at their global value, bit for bit (a server optimizer's momentum does not move them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fedpeft.aggregation import Update
from fedpeft.arrays import Arrays

from .validation import TensorSpec


class UplinkKeys:
    """The reference tensors a reply carries in each round; ``keys=None``: all, always."""

    def __init__(
        self,
        reference: dict[str, TensorSpec],
        keys: Callable[[int], frozenset[str]] | None = None,
    ) -> None:
        self.reference = reference
        self.keys = keys

    def of(self, server_round: int) -> dict[str, TensorSpec]:
        """The specs of the tensors a reply carries in ``server_round``."""
        if self.keys is None:
            return self.reference
        keys = self.keys(server_round)
        return {k: spec for k, spec in self.reference.items() if k in keys}

    def resting(self, server_round: int, sent: Arrays | None) -> Arrays:
        """The arrays sent in ``server_round`` that replies do not carry back."""
        if sent is None or self.keys is None:
            return {}
        carried = self.of(server_round)
        return {k: v for k, v in sent.items() if k not in carried}

    @staticmethod
    def complete(updates: list[Update], resting: Arrays) -> list[Update]:
        """Each update with the resting arrays as sent (a zero update there)."""
        if not resting:
            return updates
        return [dataclasses.replace(u, arrays={**resting, **u.arrays}) for u in updates]
