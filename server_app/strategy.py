"""FedAvg over the trainable PEFT tensors: checked replies, seeded sampling, robust rules."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedpeft import protocol
from fedpeft.aggregation import RULES, Aggregator, RuleAggregator, RuleParams, Update
from fedpeft.arrays import Arrays
from fedpeft.codecs import Codec
from fedpeft.server_opt import ServerOptimizer

from . import node_ranks
from .central_dp import CentralDp
from .client_eval import ClientEvaluation
from .guard import Guard
from .resumable import Resumable
from .round_loop import RoundLoop, RoundsFailedError
from .rounds import RoundStats, Sent
from .sampling import NodeDirectory
from .uplink_keys import UplinkKeys
from .validation import (
    Checked,
    Limits,
    TensorSpec,
    check_envelope,
    check_reply,
    model_norm,
    reply_node,
)

log = logging.getLogger(__name__)

__all__ = ["PeftFedAvg", "RoundsFailedError"]


class PeftFedAvg(Resumable, RoundLoop, ClientEvaluation, FedAvg):
    """FedAvg that aggregates only the trainable tensors of a PEFT model.

    Beyond :class:`flwr.serverapp.strategy.FedAvg` it samples clients with a
    seeded generator over their partition ids, checks every reply (envelope,
    keys, decoded shapes and dtypes, finiteness, weight, payload and update
    norm; a bad reply is dropped with a logged reason), aggregates the accepted
    ones in partition-id order with FedAvg or a robust rule, measures the bytes
    sent each way, skips a round with too few valid replies and stops after
    ``max_failed_rounds`` such rounds in a row. Federated evaluation (on the
    clients' held-out images) is :class:`~server_app.client_eval.ClientEvaluation`'s.

    Parameters
    ----------
    reference : dict[str, TensorSpec]
        Keys, shapes and dtypes of the trainable tensors of the seeded model.
    seed : int
        Seed of the client sampling (with the round number).
    limits : Limits, optional
        Payload, ``num-examples`` and update-norm bounds on a reply.
    guard : Guard, optional
        The poisoning guard's bounds on update norms relative to the global model and
        to the round's median (:mod:`server_app.guard`); ``None`` = off.
    aggregation : str
        One of :data:`fedpeft.aggregation.RULES`.
    rule_params : RuleParams, optional
        Parameters of the robust rules.
    min_replies : int
        Fewest valid replies that make a round.
    clients_per_round : int
        Clients sampled per round; 0 = ``max(fraction_train·N, min_train_nodes)``.
    max_failed_rounds : int
        Consecutive failed rounds after which :meth:`start` raises.
    central_dp : CentralDp, optional
        Server-side clipping and noise (``dp.mode = "central"``) instead of ``aggregation``.
    optimizer : ServerOptimizer, optional
        Applies the round's aggregate to the global arrays (``server.optimizer``);
        ``None`` = the aggregate is the next global model.
    lr_at : callable, optional
        The learning rate sent in round ``r`` (``train.lr-schedule``); ``None`` = the
        ``lr`` of the train config, every round.
    uplink, downlink : Codec, optional
        ``comm.uplink`` (replies carry the update in it) and ``comm.downlink`` (the
        global arrays travel in it); ``None`` = fp32 both ways.
    uplink_keys : callable, optional
        The reference keys a reply carries in round ``r`` (RoLoRA: the round's factor
        and the head; :func:`fedpeft.sharing.uplink_names`); ``None`` = all, every
        round. Replies are checked against that subset; the tensors not sent up keep
        their global value (:class:`~server_app.uplink_keys.UplinkKeys`).
    nodes : NodeDirectory, optional
        Node id ↔ partition id, the sampling over partitions, quarantined partitions,
        the ``server.partition-registry`` and HetLoRA's node ranks (nodes are sent and
        checked at their rank: :mod:`server_app.node_ranks`); ``None`` = one seeded by
        ``seed`` with the defaults.
    **kwargs
        Passed to :class:`~flwr.serverapp.strategy.FedAvg`.

    """

    def __init__(
        self,
        reference: dict[str, TensorSpec],
        *,
        seed: int = 0,
        limits: Limits | None = None,
        guard: Guard | None = None,
        aggregation: str = "fedavg",
        rule_params: RuleParams | None = None,
        min_replies: int = 1,
        max_failed_rounds: int = 3,
        clients_per_round: int = 0,
        central_dp: CentralDp | None = None,
        optimizer: ServerOptimizer | None = None,
        lr_at: Callable[[int], float] | None = None,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
        uplink_keys: Callable[[int], frozenset[str]] | None = None,
        nodes: NodeDirectory | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.reference = reference
        self.limits = limits or Limits()
        self.guard = guard
        self.aggregator: Aggregator = (
            central_dp
            if central_dp is not None
            else RuleAggregator(RULES.get(aggregation, "aggregation"), rule_params or RuleParams())
        )
        self.min_replies = min_replies
        self.max_failed_rounds = max_failed_rounds
        self.clients_per_round = clients_per_round
        self.failed_streak = 0
        self.nodes = nodes if nodes is not None else NodeDirectory(seed)
        self.rounds: dict[int, RoundStats] = {}
        self._sent: dict[int, Sent] = {}
        self.client_epsilon: dict[int, float] = {}  # local DP: latest ε per partition
        self.optimizer = optimizer
        self.lr_at = lr_at
        self.uplink = uplink if uplink is not None and uplink.encodes else None
        self.downlink = downlink if downlink is not None and downlink.encodes else None
        self.carried = UplinkKeys(reference, uplink_keys)

    @property
    def central_dp(self) -> CentralDp | None:
        """The central-DP rule, when it is the aggregator (for inspection)."""
        return self.aggregator if isinstance(self.aggregator, CentralDp) else None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample clients (seeded, by partition id); send them the trainable arrays."""
        extra = sorted(set(arrays) - set(self.reference))
        if extra:  # never send anything but the trainable set
            raise ValueError(f"refusing to send non-trainable arrays {extra[:5]}")
        stats = self.rounds[server_round] = RoundStats()
        node_ids = self.nodes.sample(grid, server_round, self.fraction_train, self.min_train_nodes,
                                     self.min_available_nodes, self.clients_per_round)  # fmt: skip
        config[protocol.SERVER_ROUND] = server_round
        if self.lr_at is not None:
            config[protocol.LR] = float(self.lr_at(server_round))
        if protocol.LR in config:
            stats.lr = float(config[protocol.LR])  # type: ignore[arg-type]
        messages = self.downlink_messages(
            node_ids, arrays, config, protocol.TRAIN, str(server_round), stats
        )
        self._sent = {server_round: Sent(messages, {k: v.numpy() for k, v in arrays.items()})}
        stats.population = len(list(grid.get_node_ids()))
        log.info("round %d: sampled partitions %s", server_round, self.nodes.partitions(node_ids))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop invalid replies (logged), then aggregate the rest in partition order."""
        stats = self.rounds.setdefault(server_round, RoundStats())
        replies = list(replies)
        counts = Counter(m.metadata.src_node_id for m in replies if not m.has_error())
        sent = self._sent.get(server_round)
        reference = self.carried.of(server_round)
        sent_up = {k: sent.arrays[k] for k in reference} if sent else None
        accepted: list[tuple[Update, Message]] = []
        norms: dict[int, float] = {}  # by node, computed once by check_reply
        for msg in replies:
            node = reply_node(msg, sent.messages if sent else None)
            if msg.has_error():
                stats.errors[node] = msg.error.reason
                log.warning("round %d: node %d (partition %s) failed: %s", server_round, node,
                            self.nodes.label(node), msg.error.reason)  # fmt: skip
                continue
            stats.count_received(msg.content)
            result = self._check(msg, server_round, counts, reference, sent_up)
            if isinstance(result, str):
                self._reject(server_round, stats, node, result)
                continue
            checked, arrays = result
            if self.uplink is not None:  # encoded bytes against the same reply in fp32
                stats.count_encoded(msg.content, checked.arrays)
            update = Update(arrays, checked.weight, node, self.nodes.partition_of(node))
            accepted.append((update, msg))
            if checked.norm is not None:
                norms[node] = checked.norm
        if self.guard is not None and sent_up is not None:
            stats.global_norm = model_norm(sent_up)
            refused = self.guard.screen(norms, stats.global_norm)
            for node, reason in refused.items():
                self._reject(server_round, stats, node, reason)
            accepted = [(u, m) for u, m in accepted if u.node_id not in refused]
        if sent is not None:  # sampled, but no reply before the round's timeout
            replied = {reply_node(msg, sent.messages) for msg in replies}
            silent = {m.metadata.dst_node_id for m in sent.messages} - replied
            stats.silent = sorted(silent, key=lambda n: (self.nodes.partition_of(n), n))
            if silent:
                log.warning("round %d: no reply from partitions %s (dropped out or past the "
                            "round timeout)", server_round,
                            [self.nodes.label(n) for n in stats.silent])  # fmt: skip
        accepted.sort(key=lambda pair: (pair[0].partition_id, pair[0].node_id))
        stats.accepted = len(accepted)
        for update, msg in accepted:
            metrics = next(iter(msg.content.metric_records.values()))
            self.nodes.confirm(update.node_id, metrics.get(protocol.PARTITION_ID))
            label = self.nodes.label(update.node_id)
            stats.count_accepted(label, update.weight, metrics, norms.get(update.node_id))
            if protocol.DP_EPSILON in metrics:  # local DP: each client's cumulative ε
                self.client_epsilon[update.partition_id] = float(metrics[protocol.DP_EPSILON])
        if self.client_epsilon:
            stats.dp["dp_epsilon_max"] = max(self.client_epsilon.values())
        arrays = self._aggregate(server_round, stats, [u for u, _ in accepted])
        if not stats.dp:  # a failed round: what the rule records then (central DP: ε so far)
            stats.dp.update(self.aggregator.idle())
        stats.train_seconds = time.perf_counter() - stats.started
        if arrays is None:
            return None, None
        metrics = self.train_metrics_aggr_fn([m.content for _, m in accepted], self.weighted_by_key)
        return arrays, metrics

    def _check(self, msg: Message, server_round: int, counts: Counter,
               reference: dict[str, TensorSpec], sent_up: Arrays | None,
               ) -> tuple[Checked, Arrays] | str:  # fmt: skip
        """The checked reply and its arrays at full rank, or why it is rejected.

        A node that announced a smaller LoRA rank is checked against its own shapes and
        the arrays it was sent; its arrays are then zero-padded in the update.
        """
        sent = self._sent.get(server_round)
        rank = self.nodes.rank_of(msg.metadata.src_node_id)
        result = check_envelope(
            msg, server_round, sent.messages if sent else None, counts
        ) or check_reply(msg.content, node_ranks.specs_at(reference, rank), self.weighted_by_key,
                         self.limits, node_ranks.sent_at(sent_up, rank), self.uplink)  # fmt: skip
        if isinstance(result, str):
            return f"{result} (its announced lora-rank is {rank})" if rank else result
        arrays = node_ranks.padded(result.arrays, sent_up, rank)
        return arrays if isinstance(arrays, str) else (result, arrays)

    def _reject(self, server_round: int, stats: RoundStats, node: int, reason: str) -> None:
        """Drop ``node``'s reply this round: recorded and logged with its partition."""
        stats.rejected[node] = reason
        log.warning("round %d: rejected the reply of node %d (partition %s): %s",
                    server_round, node, self.nodes.label(node), reason)  # fmt: skip

    def _aggregate(
        self, server_round: int, stats: RoundStats, updates: list[Update]
    ) -> ArrayRecord | None:
        if len(updates) < self.min_replies:
            stats.failure = f"{len(updates)} valid replies, fewer than server.min-replies"
        else:
            try:
                aggregated = self._rule(server_round, stats, updates)
            except ValueError as exc:  # e.g. too few replies for Krum's f
                stats.failure = str(exc)
            else:
                sent = self._sent.get(server_round)
                if self.optimizer is not None and sent is not None:
                    aggregated = self.optimizer.step(server_round, sent.arrays, aggregated)
                aggregated.update(self.carried.resting(server_round, sent and sent.arrays))
                stats.aggregated = True
                return ArrayRecord(
                    {k: Array(np.ascontiguousarray(v)) for k, v in aggregated.items()}
                )
        log.warning("round %d failed (%s); global state unchanged", server_round, stats.failure)
        return None

    def _rule(self, server_round: int, stats: RoundStats, updates: list[Update]) -> Arrays:
        sent = self._sent.get(server_round)
        updates = self.carried.complete(  # RoLoRA: the factor not sent up, as sent
            updates, self.carried.resting(server_round, sent and sent.arrays)
        )
        aggregated, info = self.aggregator.aggregate(
            updates, sent.arrays if sent else None, stats.sent_to, stats.population, server_round
        )
        stats.dp.update(info)
        return aggregated
