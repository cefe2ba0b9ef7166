"""ClientApp: load the global trainable tensors, train locally, reply with only those.

The model and the data partition are built once per process (a Ray worker in
simulation) and reused across rounds and across the clients that worker runs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import NamedTuple

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fedpeft import faults, protocol, wire
from fedpeft import model as model_lib
from fedpeft.arrays import Arrays, to_numpy, trainable_state, wire_bytes
from fedpeft.config import RunConfig, run_config
from fedpeft.data import ImageTensors
from fedpeft.device import set_threads
from fedpeft.engine import Engine, make_engine
from fedpeft.logs import setup_logging
from fedpeft.precision import keep_scale, kept_scaler
from fedpeft.sharing import (
    keep_local,
    load_shared,
    restore_local,
    sharing_of,
    training_round,
)
from fedpeft.training import client_seed, evaluate, train_local

from . import secagg
from .node_data import lora_rank, node_setup

log = logging.getLogger(__name__)

app = ClientApp()


class Local(NamedTuple):
    """What a message is handled with: the config, the model, the node's data, its engine,
    and the global arrays it received (fp32, decoded where ``comm.downlink`` encodes them).
    The model holds them, and this client's local tensors (``local_restored``: from its
    ``Context.state``, not the initial ones) where the method keeps some.
    """  # noqa: D205

    cfg: RunConfig
    model: nn.Module
    data: ImageTensors
    client_id: int
    engine: Engine
    received: ArrayRecord
    local_restored: bool = False
    local_test: ImageTensors | None = None


def _prepare(msg: Message, context: Context) -> Local:
    setup_logging()
    cfg = run_config(context.run_config)
    set_threads(cfg.train.num_threads)
    received = wire.received(msg.content, cfg.comm.codec("downlink"))
    # node-config picks a partition or a local image folder, and optionally a weights file
    node = node_setup(cfg, context.node_config, received, context.node_id)
    model = model_lib.cached_model(node.model, cfg.peft, node.data.num_classes, cfg.seed,
                                   node.rank)  # fmt: skip
    t = cfg.train  # the model moves to train.device (a device this node lacks fails here)
    engine = make_engine(model, t.device, t.precision, t.augment, private=cfg.dp.mode == "local")
    sharing = sharing_of(cfg.peft)
    load_shared(model, received, sharing)
    restored = restore_local(model, sharing, context.state)
    return Local(cfg, model, node.data, node.client_id, engine, received, restored,
                 node.local_test)  # fmt: skip


def _reply_arrays(
    cfg: RunConfig, trained: Arrays, received: Arrays, state: RecordDict
) -> ArrayRecord:
    """What travels back: the fp32 weights, or the update in the ``comm.uplink`` codec."""
    if not cfg.comm.codec("uplink").encodes:
        return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in trained.items()})
    return wire.encode_update(trained, received, cfg.comm.codec("uplink"),
                              state if cfg.comm.feedback else None)  # fmt: skip


def sent_lr(config: ConfigRecord) -> float:
    """The learning rate the server sent for this round (``lr`` in the train config).

    Raises
    ------
    ValueError
        If it is missing or not a finite number > 0 (the reply is then an error).

    """
    lr = config.get(protocol.LR)
    if not protocol.is_finite_positive(lr):
        raise ValueError(f"train config lr={lr!r}: the server must send a finite lr > 0")
    return float(lr)


class LocalRound(NamedTuple):
    """What a round of local training made: the tensors that travel up (``trained``), the
    values received for them (``sent``), the outcome and what the reply reports.
    """  # noqa: D205

    local: Local
    server_round: int
    trained: Arrays
    sent: Arrays
    num_examples: int
    loss: float
    accuracy: float
    fault: str
    dp_metrics: dict[str, float | int]


def _train_round(msg: Message, context: Context) -> LocalRound:
    """Train the received trainable tensors on this client's partition (both train handlers)."""
    local = _prepare(msg, context)
    cfg, model, data, partition_id, engine = (local.cfg, local.model, local.data,
                                              local.client_id, local.engine)  # fmt: skip
    server_round = int(msg.content[protocol.CONFIG][protocol.SERVER_ROUND])
    sharing = sharing_of(cfg.peft)
    lr = sent_lr(msg.content[protocol.CONFIG])  # the server's (a schedule may change it per round)
    fault = faults.before_training(cfg.fault, cfg.seed, server_round, partition_id)
    seed = client_seed(cfg.seed, server_round, partition_id)
    dp_metrics: dict[str, float | int] = {}
    with training_round(model, sharing, server_round):  # RoLoRA: this round's factor only
        if cfg.dp.mode == "local":  # DP-SGD; the accountant persists in context.state
            from fedpeft.dp.client import private_round

            outcome, dp_metrics = private_round(
                model, data, cfg, seed, context.state, partition_id, lr=lr, engine=engine
            )
        else:
            scaler = kept_scaler(engine.precision, context.state)  # fp16: last round's scale
            outcome = train_local(model, data, cfg.train, lr, seed, engine, scaler)
            keep_scale(scaler, context.state)
        # what travels up: not the local tensors (FedSA's B) nor those frozen this round
        trained = {k: v for k, v in to_numpy(trainable_state(model)).items()
                   if not sharing.is_local(k)}  # fmt: skip
    keep_local(model, sharing, context.state)  # FedSA: B stays here, for the next round
    if not math.isfinite(outcome.loss):
        log.warning(
            "client %d round %d: training loss is %s", partition_id, server_round, outcome.loss
        )
    sent = {k: local.received[k].numpy() for k in trained}  # what this round's reply carries
    return LocalRound(local, server_round, trained, sent, outcome.num_examples, outcome.loss,
                      outcome.accuracy, fault, dp_metrics)  # fmt: skip


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received trainable tensors on this client's partition."""
    start = time.perf_counter()
    done = _train_round(msg, context)
    cfg, partition_id, fault = done.local.cfg, done.local.client_id, done.fault
    trained, sent, num_examples = done.trained, done.sent, done.num_examples
    sharing = sharing_of(cfg.peft)
    if fault:  # fault injection (fault.modes), for fault-tolerance tests only
        log.warning("client %d round %d: injecting fault %r", partition_id, done.server_round,
                    fault)  # fmt: skip
        trained = faults.corrupt(fault, trained, sent, cfg.fault.factor(partition_id))
        num_examples = faults.num_examples(fault, num_examples)
    arrays = _reply_arrays(cfg, trained, sent, context.state)
    if fault:
        arrays = faults.corrupt_encoding(fault, arrays)
    values = {
        protocol.NUM_EXAMPLES: num_examples,
        protocol.TRAIN_LOSS: done.loss,
        protocol.TRAIN_ACC: done.accuracy,
        protocol.PARTITION_ID: partition_id,
        protocol.WORKER_PID: os.getpid(),
        protocol.WORKER_MODEL_BUILDS: model_lib.builds(),
        protocol.BYTES_UP: wire_bytes(arrays),
        protocol.LOCAL_RESTORED: int(done.local.local_restored) if sharing.local else None,
        protocol.TRAIN_SECONDS: time.perf_counter() - start,
        **done.dp_metrics,
    }
    metrics = MetricRecord({k: v for k, v in values.items() if v is not None})
    content = RecordDict({protocol.ARRAYS: arrays, protocol.METRICS: metrics})
    uplink = cfg.comm.codec("uplink")
    if uplink.encodes:
        content[protocol.COMM] = faults.announce(fault, wire.announce(uplink))
    return Message(content=content, reply_to=msg)


@app.train(protocol.SECAGG_MASKED_ACTION)
def secagg_masked(msg: Message, context: Context) -> Message:
    """SecAgg+'s masked stage: train as :func:`train` does; reply the masked update only."""
    secagg.expect_masked(context)  # before training: a node out of step trains for nothing
    done = _train_round(msg, context)
    dp = done.local.cfg.dp
    clip = dp.clip_norm if dp.mode == "central" else None
    return secagg.masked(msg, context, done.trained, done.sent, done.num_examples, clip)


# SecAgg+'s key stages: no model, no torch (client_app/secagg.py)
app.train(protocol.SECAGG_SETUP_ACTION)(secagg.setup)
app.train(protocol.SECAGG_SHARE_KEYS_ACTION)(secagg.share_keys)
app.train(protocol.SECAGG_UNMASK_ACTION)(secagg.unmask)


@app.train(protocol.NCM_ACTION)
def ncm_statistics(msg: Message, context: Context) -> Message:
    """FedNCM: per-class sums and counts of this client's pooled features (before round 1)."""
    from fedpeft.ncm import class_feature_sums

    local = _prepare(msg, context)
    cfg, model, data, engine = local.cfg, local.model, local.data, local.engine
    sums, counts = class_feature_sums(model, data, cfg.server.eval_batch_size, engine)
    arrays = ArrayRecord({protocol.SUMS: Array(sums), protocol.COUNTS: Array(counts)})
    metrics = MetricRecord({protocol.NUM_EXAMPLES: len(data)})
    content = RecordDict({protocol.ARRAYS: arrays, protocol.METRICS: metrics})
    return Message(content=content, reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server this node's partition id (for seeded sampling and ordering), and
    the LoRA rank it trains where it is not the run's ``peft.lora.r`` (HetLoRA).
    """  # noqa: D205
    node = context.node_config
    reply = {k: int(node[k]) for k in (protocol.PARTITION_ID, protocol.NUM_PARTITIONS) if k in node}
    rank = lora_rank(run_config(context.run_config), node)
    if rank is not None:
        reply[protocol.LORA_RANK] = rank
    return Message(content=RecordDict({protocol.NODE: MetricRecord(reply)}), reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the global model, with this client's local tensors, on its held-out images."""
    local = _prepare(msg, context)
    cfg = local.cfg
    if local.local_test is None:  # the ServerApp refuses this config at start-up
        raise ValueError("evaluate: data.local-test-fraction is 0, no images are held out")
    outcome = evaluate(local.model, local.local_test, cfg.server.eval_batch_size, local.engine,
                       cfg.train.feature_cache)  # fmt: skip
    metrics = MetricRecord(
        {
            protocol.NUM_EXAMPLES: outcome.num_examples,
            protocol.EVAL_LOSS: outcome.loss,
            protocol.EVAL_ACC: outcome.accuracy,
            protocol.PARTITION_ID: local.client_id,
        }
    )
    return Message(content=RecordDict({protocol.METRICS: metrics}), reply_to=msg)
