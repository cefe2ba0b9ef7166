"""What replies carry per round when a method sends part of its set (RoLoRA's factor).

The server sends every shared tensor down each round; a reply may carry only the
round's part. Replies are checked against that part; for aggregation each reply is
completed with the arrays sent (a zero update), so every rule and the central-DP
clipping see the same keys every round, and the tensors not sent up are then put back
at their global value, bit for bit (a server optimizer's momentum does not move them).
"""

from __future__ import annotations

import dataclasses

from fedpeft.aggregation import Update
from fedpeft.arrays import Arrays
from fedpeft.sharing import uplink_names
from peft_strategies.base import Sharing

from .validation import TensorSpec


class UplinkKeys:
    """The reference tensors a reply carries in each round.

    ``sharing`` is the method's (:func:`fedpeft.sharing.sharing_of`); all of them, every
    round, unless it alternates (RoLoRA: the round's factor and the head).
    """

    def __init__(self, reference: dict[str, TensorSpec], sharing: Sharing | None = None) -> None:
        self.reference = reference
        self.sharing = sharing if sharing is not None and sharing.alternate else None

    def of(self, server_round: int) -> dict[str, TensorSpec]:
        """The specs of the tensors a reply carries in ``server_round``."""
        if self.sharing is None:
            return self.reference
        keys = uplink_names(frozenset(self.reference), self.sharing, server_round)
        return {k: spec for k, spec in self.reference.items() if k in keys}

    def resting(self, server_round: int, sent: Arrays | None) -> Arrays:
        """The arrays sent in ``server_round`` that replies do not carry back."""
        if sent is None or self.sharing is None:
            return {}
        carried = self.of(server_round)
        return {k: v for k, v in sent.items() if k not in carried}

    @staticmethod
    def complete(updates: list[Update], resting: Arrays) -> list[Update]:
        """Each update with the resting arrays as sent (a zero update there)."""
        if not resting:
            return updates
        return [dataclasses.replace(u, arrays={**resting, **u.arrays}) for u in updates]
