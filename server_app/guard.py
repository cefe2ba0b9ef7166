"""The poisoning guard: reject updates whose size is absurd for the round or the model.

Two bounds on a reply's update norm ‖reply − sent‖, both on by default
(``server.guard.*``), applied after every other check of the reply:

- **model bound**: ``model-factor × max(‖sent‖, 1)``. It needs no other reply, so it
  also holds in rounds of one or two replies, where no statistic of the round is
  robust. It stops updates of absurd size (a model filled with 1e4 or 1e30, a huge
  scaling) whatever the round looks like. The floor of 1 keeps a near-zero global
  trainable set (a zero-initialised head alone) from rejecting every update.
- **round bound**: with at least :data:`MIN_REPLIES` replies that passed every other
  check, ``round-factor × median`` of their norms. The median of three or more is
  moved by no single attacker (and by fewer than half of them), so an update many
  times larger than the round's typical one is refused; a round of identical honest
  updates has every norm equal to the median and passes.

The defaults come from measured honest updates (``benchmarks/guard.py``,
docs/RELIABILITY.md); ``0`` turns a bound off. ``server.max-update-norm`` stays an explicit,
absolute bound of its own.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from fedpeft.arrays import Arrays

from .validation import model_norm

if TYPE_CHECKING:
    from .reply_check import Candidate
    from .rounds import RoundStats

C = TypeVar("C", bound="Candidate")

# Fewest replies whose median the round bound trusts: with two, one attacker is the mean.
MIN_REPLIES = 3
# ‖sent‖ below this counts as this (a zero-initialised trainable set).
MODEL_NORM_FLOOR = 1.0


@dataclass(frozen=True)
class Guard:
    """``server.guard.*``: the two bounds (0 = that bound off)."""

    round_factor: float = 0.0
    model_factor: float = 0.0

    def model_bound(self, sent_norm: float) -> float:
        """The largest update norm the model bound lets through (``inf``: off)."""
        if not self.model_factor:
            return math.inf
        return self.model_factor * max(sent_norm, MODEL_NORM_FLOOR)

    def screen(self, norms: dict[int, float], sent_norm: float) -> dict[int, str]:
        """The replies (by node) the guard refuses, with the reason.

        ``norms`` are the update norms of the round's replies that passed every other
        check; ``sent_norm`` is the norm of the global trainable tensors sent.
        """
        refused = {}
        bound = self.model_bound(sent_norm)
        for node, norm in norms.items():
            if norm > bound:
                refused[node] = (f"update norm {norm:.4g} is over {self.model_factor:g}x the "
                                 f"global model's norm {sent_norm:.4g} (server.guard."
                                 "model-factor)")  # fmt: skip
        rest = {n: v for n, v in norms.items() if n not in refused}
        median = statistics.median(rest.values()) if len(rest) >= MIN_REPLIES else 0.0
        if self.round_factor and median > 0:  # 0: every update is empty, none is larger
            for node, norm in rest.items():
                if norm > self.round_factor * median:
                    refused[node] = (f"update norm {norm:.4g} is over {self.round_factor:g}x "
                                     f"the round's median {median:.4g} of {len(rest)} replies "
                                     "(server.guard.round-factor)")  # fmt: skip
        return refused


@dataclass(frozen=True)
class Screen:
    """The guard's step: drop the candidates whose update norm the :class:`Guard` refuses.

    ``guard`` ``None``: off. ``reject(node, reason)`` records and logs each refusal.
    """

    guard: Guard | None

    def __call__(self, candidates: list[C], sent_up: Arrays | None, stats: RoundStats,
                 reject: Callable[[int, str], None]) -> list[C]:  # fmt: skip
        """``candidates`` less the refused ones; ``stats.global_norm`` is ‖sent‖."""
        if self.guard is None or sent_up is None:
            return candidates
        stats.global_norm = model_norm(sent_up)
        norms = {c.update.node_id: c.norm for c in candidates if c.norm is not None}
        refused = self.guard.screen(norms, stats.global_norm)
        for node, reason in refused.items():
            reject(node, reason)
        return [c for c in candidates if c.update.node_id not in refused]
