"""The SecAgg+ step of a round: the sampled nodes' weighted mean update, never one alone.

With ``secagg.enabled`` it takes the place of send → check → guard → tally → aggregate in
:class:`~server_app.round.Round`. For the round's sampled nodes it runs setup → share
keys → masked (the round's train config and global arrays, as a train message carries
them; each node trains as for a plain round) → unmask (:mod:`server_app.secagg_stages`),
and from the unmasked sums ``Σ w·clip(u)`` and ``Σ w`` (:func:`fedpeft.secagg.server.
aggregate`) makes the round's aggregate: ``sent + Σ w·clip(u) / Σ w``, or under central
DP the noisy mean of the nodes' norm-clipped updates (:meth:`CentralDp.release`). Nodes
that drop out after sharing their keys are recovered; too few survivors, or a protocol
error, fail the round (the global arrays unchanged, the reason in the round's stats).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from flwr.serverapp import Grid

from fedpeft import protocol
from fedpeft.aggregation import Aggregator
from fedpeft.arrays import Arrays
from fedpeft.config import SecAggConfig
from fedpeft.secagg import SecAggError, SecAggParams, graph
from fedpeft.secagg.layout import unflatten
from fedpeft.secagg.server import aggregate

from . import secagg_stages as stages
from .central_dp import CentralDp
from .rounds import RoundStats, Sent
from .sampling import NodeDirectory
from .uplink_keys import UplinkKeys

log = logging.getLogger(__name__)


def round_params(cfg: SecAggConfig, num_nodes: int, max_weight: float) -> SecAggParams:
    """The protocol's parameters for a round of ``num_nodes`` sampled nodes.

    ``secagg.num-shares`` 0 (or at least ``num_nodes``): every node is every other's
    neighbour; ``secagg.threshold`` 0: the smallest majority of a neighbourhood.

    Raises
    ------
    ValueError
        When the round cannot run the protocol (fewer than 2 nodes, a threshold above
        the neighbourhood, a sum that would wrap around the modulus).

    """
    shares = cfg.num_shares if 0 < cfg.num_shares < num_nodes else num_nodes
    return SecAggParams(
        num_clients=num_nodes, num_shares=shares, threshold=cfg.threshold or shares // 2 + 1,
        clipping_range=cfg.clipping_range, quantization_bits=cfg.quantization_bits,
        modulus_bits=cfg.modulus_bits, max_weight=max_weight,
    )  # fmt: skip


@dataclass(frozen=True)
class SecureAggregation:
    """The round's aggregate through SecAgg+ (see the module doc).

    ``aggregator`` is central DP (noise on the unmasked sum) or plain averaging;
    ``max_weight`` bounds a node's example count (1 under central DP: unweighted).
    """

    cfg: SecAggConfig
    nodes: NodeDirectory
    carried: UplinkKeys
    aggregator: Aggregator
    min_replies: int
    max_weight: float

    def __call__(self, grid: Grid, server_round: int, sent: Sent, timeout: float,
                 stats: RoundStats) -> Arrays | None:  # fmt: skip
        """The aggregated arrays (all of ``sent``'s keys), or ``None``: the round failed."""
        try:
            aggregated = self._run(grid, server_round, sent, timeout, stats)
        except (SecAggError, ValueError) as exc:
            stats.failure = f"secagg: {exc}"
            aggregated = None
        if aggregated is None:
            log.warning("round %d failed (%s); global state unchanged", server_round,
                        stats.failure)  # fmt: skip
            stats.dp.update(self.aggregator.idle())
        return aggregated

    def _run(self, grid: Grid, server_round: int, sent: Sent, timeout: float,
             stats: RoundStats) -> Arrays | None:  # fmt: skip
        specs = self.carried.of(server_round)
        size = sum(int(np.prod(s.shape, dtype=np.int64)) for s in specs.values())
        by_node = {m.metadata.dst_node_id: m for m in sent.messages}
        ranked = [n for n in by_node if self.nodes.rank_of(n)]
        if ranked:
            raise SecAggError(f"nodes {ranked} announced a LoRA rank: one vector length only")
        params = round_params(self.cfg, len(by_node), self.max_weight)

        def stage(name: str) -> stages.Stage:
            return stages.Stage(name, server_round, stats, self.nodes)

        setup = stage(protocol.SECAGG_SETUP)
        config = {**params.to_config(), protocol.SERVER_ROUND: server_round}
        keys = setup.exchange(grid, [setup.message(n, config) for n in by_node], timeout,
                              stages.check_public_keys)  # fmt: skip
        self._enough(keys, params.threshold, "answered the setup stage")

        share = stage(protocol.SECAGG_SHARE_KEYS)
        hoods = graph.neighbourhoods(sorted(keys), params, np.random.default_rng())
        sealed = share.exchange(grid, [share.message(n, {
            protocol.SECAGG_NEIGHBOURS: hoods[n],
            protocol.SECAGG_NEIGHBOUR_PK1: [keys[v][0] for v in hoods[n]],
            protocol.SECAGG_NEIGHBOUR_PK2: [keys[v][1] for v in hoods[n]],
        }) for n in sorted(keys)], timeout, stages.check_ciphertexts(hoods))  # fmt: skip
        routed = graph.route(sealed)

        mask = stage(protocol.SECAGG_MASKED_VECTOR)
        masked = mask.exchange(grid, [mask.message(n, {
            protocol.SECAGG_SOURCES: sorted(routed[n]),
            protocol.SECAGG_CIPHERTEXTS: [routed[n][s] for s in sorted(routed[n])],
        }, by_node[n].content) for n in sorted(routed)], timeout,
            stages.check_masked(params, size))  # fmt: skip
        stats.silent = sorted(set(by_node) - set(masked) - set(stats.errors)
                              - set(stats.rejected))  # fmt: skip
        self._enough(masked, max(params.threshold, self.min_replies),
                     "sent a masked vector (secagg.threshold / server.min-replies)")  # fmt: skip

        unmask = stage(protocol.SECAGG_UNMASK)
        requests = graph.unmask_requests(routed, masked)
        shares = unmask.exchange(grid, [unmask.message(n, {
            protocol.SECAGG_ACTIVE: requests[n][0], protocol.SECAGG_DROPPED: requests[n][1],
        }) for n in sorted(requests)], timeout, stages.check_shares, record_out=False)  # fmt: skip

        total, weight = aggregate(params, keys, routed, masked, shares, size)
        stats.accepted = len(masked)
        log.info("round %d: secagg unmasked the sum of %d nodes (%d sampled), weight %.1f",
                 server_round, len(masked), len(by_node), weight)  # fmt: skip
        return self._apply(
            server_round,
            unflatten(total, {k: s.shape for k, s in specs.items()}),
            weight,
            sent,
            stats,
        )

    @staticmethod
    def _enough(replies: dict, need: int, what: str) -> None:
        if len(replies) < need:
            raise SecAggError(f"{len(replies)} nodes {what}, fewer than {need}")

    def _apply(self, server_round: int, total: Arrays, weight: float, sent: Sent,
               stats: RoundStats) -> Arrays:  # fmt: skip
        """``sent`` moved by the mean update (or central DP's noisy mean) of ``total``."""
        if weight <= 0:
            raise SecAggError(f"the nodes' weights sum to {weight}")
        if isinstance(self.aggregator, CentralDp):
            full = {k: total.get(k, np.zeros(v.shape)) for k, v in sent.arrays.items()}
            out, info = self.aggregator.release(full, sent.arrays, stats.sent_to,
                                                stats.population, server_round)  # fmt: skip
            stats.dp.update(info)
            return out
        out = dict(sent.arrays)  # the tensors not sent up this round stay as sent
        for key, part in total.items():
            value = sent.arrays[key]
            out[key] = (value.astype(np.float64) + part / weight).astype(value.dtype)
        return out
