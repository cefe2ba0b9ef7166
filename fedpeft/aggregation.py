"""Aggregation rules over the decoded trainable tensors of the accepted replies.

Every rule takes the updates in a fixed order (the strategy sorts them by
partition id), so a run aggregates bit-identically however replies arrive.
``fedavg`` is the sample-weighted mean; the robust rules ignore weights, as
their papers do, because a weight is as easy to forge as a tensor.

``server.aggregation`` names one of :data:`RULES`: adding a rule is one function
registered here (the run config, its error messages and the docs/CONFIG.md table follow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum

from . import protocol
from .arrays import Arrays
from .registry import Registry


@dataclass(frozen=True)
class Update:
    """One accepted reply: its decoded arrays, weight and where it came from."""

    arrays: Arrays
    weight: int
    node_id: int
    partition_id: int


Rule = Callable[[list["Update"], "RuleParams"], Arrays]
RULES: Registry[Rule] = Registry("aggregation rule")


@dataclass(frozen=True)
class RuleParams:
    """Parameters of the robust rules (``server.*`` keys)."""

    trim_beta: float = 0.1
    byzantine: int = 0
    keep: int = 0


def _stack(updates: list[Update], key: str) -> np.ndarray:
    return np.stack([u.arrays[key] for u in updates])


@RULES.register("fedavg")
def fedavg(updates: list[Update], params: RuleParams) -> Arrays:
    """Sample-weighted mean, accumulated in float64 in the updates' order."""
    total = sum(u.weight for u in updates)
    out = {}
    for key, first in updates[0].arrays.items():
        acc = np.zeros(first.shape, dtype=np.float64)
        for u in updates:
            acc += u.arrays[key].astype(np.float64) * (u.weight / total)
        out[key] = acc.astype(first.dtype)
    return out


@RULES.register("median")
def median(updates: list[Update], params: RuleParams) -> Arrays:
    """Coordinate-wise median (unweighted)."""
    return {k: np.median(_stack(updates, k), axis=0).astype(v.dtype)
            for k, v in updates[0].arrays.items()}  # fmt: skip


@RULES.register("trimmed-mean")
def trimmed_mean(updates: list[Update], params: RuleParams) -> Arrays:
    """Coordinate-wise mean after cutting ``trim_beta`` of the values at each end."""
    return {k: trim_mean(_stack(updates, k), params.trim_beta).astype(v.dtype)
            for k, v in updates[0].arrays.items()}  # fmt: skip


def _krum_select(updates: list[Update], params: RuleParams, keep: int) -> list[Update]:
    if len(updates) < 2 * params.byzantine + 3:
        raise ValueError(
            f"Krum with server.krum.byzantine={params.byzantine} needs at least "
            f"{2 * params.byzantine + 3} accepted replies, got {len(updates)}"
        )
    contents = [
        RecordDict({protocol.ARRAYS: ArrayRecord({k: Array(v) for k, v in u.arrays.items()}),
                    protocol.METRICS: MetricRecord({"i": i})})
        for i, u in enumerate(updates)
    ]  # fmt: skip
    chosen = select_multikrum(contents, params.byzantine, keep)
    return [updates[int(c[protocol.METRICS]["i"])] for c in chosen]


@RULES.register("krum")
def krum(updates: list[Update], params: RuleParams) -> Arrays:
    """Krum (Blanchard et al., 2017): the one update closest to its n − f − 2 neighbours."""
    return dict(_krum_select(updates, params, 1)[0].arrays)


@RULES.register("multi-krum")
def multi_krum(updates: list[Update], params: RuleParams) -> Arrays:
    """Multi-Krum: the weighted mean of the ``keep`` best-scored updates (n − f if 0)."""
    keep = params.keep or len(updates) - params.byzantine
    chosen = sorted(_krum_select(updates, params, keep), key=lambda u: u.partition_id)
    return fedavg(chosen, params)


class Aggregator:
    """A rule as the strategy uses it: an object that sees the accepted updates and the
    global arrays sent this round, and may keep state (checkpointed under ``state_key``).

    Central DP (:class:`server_app.central_dp.CentralDp`) is one; :class:`RuleAggregator`
    wraps a registered stateless rule. The server optimizer then applies the aggregate.
    """  # noqa: D205

    state_key: ClassVar[str] = "rule"

    def aggregate(
        self, updates: list[Update], sent: Arrays | None, num_sampled: int, population: int,
        server_round: int,
    ) -> tuple[Arrays, dict[str, Any]]:  # fmt: skip
        """The round's aggregate and the round-record fields it adds (e.g. ``dp_*``)."""
        raise NotImplementedError

    def idle(self) -> dict[str, Any]:
        """The round-record fields of a round that aggregated nothing (failed)."""
        return {}

    def state(self) -> dict[str, Any]:
        """JSON-able state for the checkpoint (empty: nothing to keep)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""


class RuleAggregator(Aggregator):
    """A registered rule of :data:`RULES` with its parameters; no state."""

    def __init__(self, rule: Rule, params: RuleParams) -> None:
        self.rule, self.params = rule, params

    def aggregate(
        self, updates: list[Update], sent: Arrays | None, num_sampled: int, population: int,
        server_round: int,
    ) -> tuple[Arrays, dict[str, Any]]:  # fmt: skip
        return self.rule(updates, self.params), {}
