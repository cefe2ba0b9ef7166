"""FedAvg over the trainable PEFT tensors: checked replies, seeded sampling, robust rules.

:class:`PeftFedAvg` builds the round's steps (:class:`~server_app.round.Round`) from its
parameters and runs them: its :meth:`~PeftFedAvg.start` is Flower's loop over rounds
(:func:`~server_app.round.run_rounds`), and Flower's per-call strategy API
(``configure_train`` / ``aggregate_train``, ``configure_evaluate`` /
``aggregate_evaluate``) drives the same steps one call at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from fedpeft.aggregation import RULES, Aggregator, RuleAggregator, RuleParams
from fedpeft.arrays import Arrays
from fedpeft.codecs import Codec
from fedpeft.config import SecAggConfig
from fedpeft.server_opt import ServerOptimizer
from peft_strategies.base import Sharing

from .aggregate import Aggregate, Optimize
from .central_dp import CentralDp
from .checkpoint import Checkpointer
from .client_eval import ClientEvaluation
from .downlink import Configure, Send
from .failures import FailedRounds, RoundsFailedError
from .guard import Guard, Screen
from .ncm import FedNcm
from .recorder import RunRecorder
from .reply_check import CheckReplies
from .round import Closing, Round, run_rounds
from .rounds import RoundStats, Sent
from .sampling import NodeDirectory, Sample
from .secagg import SecureAggregation
from .tally import Tally
from .uplink_keys import UplinkKeys
from .validation import Limits, TensorSpec

log = logging.getLogger(__name__)

__all__ = ["PeftFedAvg", "RoundsFailedError"]


class PeftFedAvg(FedAvg):
    """FedAvg that aggregates only the trainable tensors of a PEFT model.

    Beyond :class:`flwr.serverapp.strategy.FedAvg` it samples clients with a
    seeded generator over their partition ids, checks every reply (envelope,
    keys, decoded shapes and dtypes, finiteness, weight, payload and update
    norm; a bad reply is dropped with a logged reason), aggregates the accepted
    ones in partition-id order with FedAvg or a robust rule, measures the bytes
    sent each way, skips a round with too few valid replies and stops after
    ``max_failed_rounds`` such rounds in a row. Federated evaluation (on the
    clients' held-out images) is :class:`~server_app.client_eval.ClientEvaluation`'s.
    The steps are those of :attr:`round`.

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
    sharing : Sharing, optional
        The method's sharing: where it alternates (RoLoRA), a reply carries the round's
        factor and the head only (:func:`fedpeft.sharing.uplink_names`); ``None`` = all,
        every round. Replies are checked against that subset; the tensors not sent up
        keep their global value (:class:`~server_app.uplink_keys.UplinkKeys`).
    nodes : NodeDirectory, optional
        Node id ↔ partition id, the sampling over partitions, quarantined partitions,
        the ``server.partition-registry`` and HetLoRA's node ranks (nodes are sent and
        checked at their rank: :mod:`server_app.node_ranks`); ``None`` = one seeded by
        ``seed`` with the defaults.
    secagg : SecAggConfig, optional
        ``secagg.*`` when enabled: the round aggregates through SecAgg+
        (:class:`~server_app.secagg.SecureAggregation`, ``secagg_max_weight`` bounding a
        node's weight); only :meth:`start` runs it. ``None`` = off.
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
        sharing: Sharing | None = None,
        nodes: NodeDirectory | None = None,
        secagg: SecAggConfig | None = None,
        secagg_max_weight: float = 0.0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.reference = reference
        self.limits = limits or Limits()
        self.min_replies = min_replies
        self.nodes = nodes if nodes is not None else NodeDirectory(seed)
        self.carried = UplinkKeys(reference, sharing)
        aggregator: Aggregator = (
            central_dp
            if central_dp is not None
            else RuleAggregator(RULES.get(aggregation, "aggregation"), rule_params or RuleParams())
        )
        send = Send(self.nodes, downlink if downlink is not None and downlink.encodes else None,
                    frozenset(reference))  # fmt: skip
        self.client_evaluation = ClientEvaluation(
            Sample(self.nodes, self.fraction_evaluate, self.min_evaluate_nodes,
                   self.min_available_nodes),
            send, self.limits.max_num_examples,
        )  # fmt: skip
        self.round = Round(
            sample=Sample(self.nodes, self.fraction_train, self.min_train_nodes,
                          self.min_available_nodes, clients_per_round),
            configure=Configure(lr_at),
            send=send,
            check=CheckReplies(self.nodes, self.carried, self.limits,
                               uplink if uplink is not None and uplink.encodes else None),
            screen=Screen(guard),
            tally=Tally(self.nodes),
            aggregate=Aggregate(aggregator, min_replies, self.carried),
            optimize=Optimize(optimizer),
            carried=self.carried,
            failures=FailedRounds(max_failed_rounds),
            evaluate_clients=self.client_evaluation if self.fraction_evaluate > 0 else None,
            metrics=self._train_metrics,
            secure=SecureAggregation(secagg, self.nodes, self.carried, aggregator, min_replies,
                                     secagg_max_weight) if secagg is not None else None,
        )  # fmt: skip
        self.rounds: dict[int, RoundStats] = {}  # each round's counts, by round
        # Flower's API splits a round into two calls: what configure_* sent, for aggregate_*
        self.sent: dict[int, Sent] = {}
        self.eval_sent: dict[int, list[Message]] = {}

    def _train_metrics(self, contents: list[RecordDict]) -> MetricRecord | None:
        return self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    @property
    def central_dp(self) -> CentralDp | None:
        """The central-DP rule, when it is the aggregator (for inspection)."""
        aggregator = self.round.aggregate.aggregator
        return aggregator if isinstance(aggregator, CentralDp) else None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample clients (seeded, by partition id); send them the trainable arrays."""
        if self.round.secure is not None:
            raise NotImplementedError("SecAgg+ runs its four stages in start(), not per call")
        stats = self.rounds[server_round] = RoundStats()
        sent = self.round.start(grid, server_round, arrays, config, stats)
        self.sent = {server_round: sent}
        return sent.messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop invalid replies (logged), then aggregate the rest in partition order."""
        stats = self.rounds.setdefault(server_round, RoundStats())
        trained = self.round.finish(server_round, replies, self.sent.get(server_round), stats)
        return trained.arrays, trained.metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample ``fraction_evaluate`` of the nodes (seeded by round); send the global arrays."""
        messages = self.client_evaluation.configure(server_round, arrays, config, grid)
        if self.client_evaluation.sample.fraction != 0.0:
            self.eval_sent = {server_round: messages}
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Drop bad replies (logged), then average by ``num-examples`` in partition order."""
        stats = self.rounds.setdefault(server_round, RoundStats())
        sent = self.eval_sent.get(server_round)
        return self.client_evaluation.aggregate(server_round, replies, sent, stats)

    def initialise_head(
        self, grid: Grid, arrays: ArrayRecord, keys: tuple[str, str], timeout: float
    ) -> ArrayRecord:
        """FedNCM's round 0: ``arrays`` with the head set from the clients' class means.

        Its counts are round 0's (:attr:`rounds`). Raises ``RuntimeError`` with fewer than
        ``server.min-replies`` usable replies.
        """
        stats = self.rounds[0] = RoundStats()
        ncm = FedNcm(Sample(self.nodes, 1.0, self.min_train_nodes, self.min_available_nodes),
                     self.round.send, self.min_replies, self.limits.max_num_examples)  # fmt: skip
        return ncm(grid, arrays, keys, timeout, stats)

    def state(self) -> dict[str, object]:
        """What a checkpoint must keep to resume the steps (JSON)."""
        return self.round.state()

    def state_arrays(self) -> Arrays:
        """What a checkpoint keeps of the steps as tensors (the server optimizer's moments)."""
        return self.round.state_arrays()

    def load_state(self, state: dict[str, object], arrays: Arrays | None = None) -> None:
        """Restore :meth:`state` and :meth:`state_arrays`."""
        self.round.load_state(state, arrays)

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
        recorder: RunRecorder | None = None,
        checkpointer: Checkpointer | None = None,
        on_round_end: Callable[[int, ArrayRecord], None] | None = None,
    ) -> Result:
        """Flower's round loop, plus resuming at ``first_round`` and failed-round handling.

        Round 0 (evaluation of the initial arrays) runs only when starting at round 1.
        After each round's evaluation ``recorder`` records it and ``checkpointer`` saves
        the checkpoint, then ``on_round_end`` is called. Raises
        :class:`RoundsFailedError` after ``max_failed_rounds`` consecutive failed rounds,
        once that round is recorded.
        """
        return run_rounds(self.round, grid, initial_arrays, num_rounds, timeout,
                          train_config or ConfigRecord(), evaluate_config or ConfigRecord(),
                          Closing(evaluate_fn, recorder, checkpointer), first_round,
                          on_round_end, self.rounds)  # fmt: skip
