"""ServerApp: seeded reference model → PEFT FedAvg → central evaluation → results."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedpeft import protocol
from fedpeft.aggregation import RuleParams
from fedpeft.arrays import payload_bytes, theoretical_bytes, to_arrayrecord, wire_bytes
from fedpeft.config import NodeConfig, RunConfig, run_config
from fedpeft.config.secagg_checks import max_weight
from fedpeft.data import load_test
from fedpeft.device import set_threads
from fedpeft.dp import warn_delta
from fedpeft.engine import make_engine
from fedpeft.faults import crash_after_aggregation
from fedpeft.hetlora import node_rank
from fedpeft.logs import setup_logging
from fedpeft.model import build_model
from fedpeft.progress import RESULTS
from fedpeft.record import RoundRecord, RunRecord
from fedpeft.schedules import lr_schedule
from fedpeft.server_opt import OptParams, make_optimizer
from fedpeft.sharing import shared_state, sharing_of

from . import checkpoint
from .central_dp import CentralDp
from .evaluation import make_evaluate_fn
from .guard import Guard
from .ncm import head_keys
from .partition_keys import PartitionKeys
from .recorder import RunRecorder
from .sampling import NodeDirectory
from .strategy import PeftFedAvg
from .validation import Limits, reference_specs

log = logging.getLogger(__name__)

app = ServerApp()


def _run_name(cfg_name: str, method: str, dataset: str, run_id: int) -> str:
    if cfg_name:
        return cfg_name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{method}-{Path(dataset).name}-{stamp}-{run_id}"


def warn_dp_delta(cfg: RunConfig, num_nodes: int) -> None:
    """Warn at start-up where δ >= 1/(records protected) is evident.

    Local DP protects each client's images (about ``data.train-size / nodes`` of
    them; each client also checks its exact count); central DP protects whole
    clients (``nodes`` of them). ``num_nodes`` is 0 when no node has connected yet.
    """
    if cfg.dp.mode == "local" and num_nodes and cfg.data.train_size:
        warn_delta(cfg.dp.delta, cfg.data.train_size // num_nodes, "server (images per client)")
    elif cfg.dp.mode == "central" and num_nodes:
        warn_delta(cfg.dp.delta, num_nodes, "server (clients)")


def make_strategy(cfg: RunConfig, initial: ArrayRecord) -> PeftFedAvg:
    """The strategy for ``cfg``; reply limits default from the trainable set's size."""
    server = cfg.server
    limits = Limits(
        max_payload_bytes=server.max_payload_bytes or 2 * payload_bytes(initial),
        max_num_examples=server.max_num_examples or cfg.data.train_size,
        max_update_norm=server.max_update_norm,
    )
    return PeftFedAvg(
        reference=reference_specs(initial),
        seed=cfg.seed,
        limits=limits,
        # secagg: the server never sees one update; the guard's defaults are not applied
        guard=None
        if cfg.secagg.enabled
        else Guard(server.guard__round_factor, server.guard__model_factor),
        aggregation=server.aggregation,
        rule_params=RuleParams(server.trim_beta, server.krum__byzantine, server.krum__keep),
        min_replies=server.min_replies,
        max_failed_rounds=server.max_failed_rounds,
        clients_per_round=server.clients_per_round,
        fraction_train=server.fraction_train,
        fraction_evaluate=server.fraction_evaluate,
        min_train_nodes=server.min_train_nodes,
        min_evaluate_nodes=1 if server.fraction_evaluate else 0,  # fraction · nodes, at least 1
        min_available_nodes=server.min_train_nodes,
        optimizer=make_optimizer(
            server.optimizer,
            OptParams(server.lr, server.momentum, server.beta1, server.beta2, server.tau),
        ),
        lr_at=lr_schedule(cfg.train, cfg.lr, server.num_rounds),
        central_dp=CentralDp(cfg.dp, server.num_rounds, cfg.seed)
        if cfg.dp.mode == "central"
        else None,
        uplink=cfg.comm.codec("uplink"),
        downlink=cfg.comm.codec("downlink"),
        sharing=sharing_of(cfg.peft),
        nodes=NodeDirectory(
            cfg.seed,
            query_timeout=server.round_timeout,
            exclude=server.excluded(),
            max_rank=cfg.peft.params.r if cfg.peft.method == "lora" else 0,  # HetLoRA
            keys=PartitionKeys.load(server.partition_registry)
            if server.partition_registry
            else None,
            infer=server.infer_partitions,
            partition_rank=lambda pid: node_rank(cfg.peft, NodeConfig(partition_id=pid)),
        ),
        secagg=cfg.secagg if cfg.secagg.enabled else None,
        # central DP averages unweighted: each node's weight is 1
        secagg_max_weight=1.0 if cfg.dp.mode == "central" else max_weight(cfg),
    )


def wire_metadata(cfg: RunConfig) -> dict[str, dict[str, object]]:
    """The run record's ``wire``: what each direction carries, and in which codec."""
    out: dict[str, dict[str, object]] = {}
    for direction, payload in (("uplink", protocol.UPDATE), ("downlink", "weights")):
        codec = cfg.comm.codec(direction)
        if not codec.encodes:
            payload, carried_as = "weights", "float32"
        else:
            carried_as = codec.carried_as
        out[direction] = {protocol.CODEC: codec.name, protocol.PAYLOAD: payload,
                          "carried_as": carried_as}  # fmt: skip
    if cfg.comm.codec("uplink").encodes:
        out["uplink"]["error_feedback"] = cfg.comm.feedback
    return out


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run (or resume) federated PEFT fine-tuning with central evaluation each round."""
    setup_logging()
    cfg = run_config(context.run_config)  # a bad key or value fails here, at start-up
    set_threads(cfg.train.num_threads)
    test = load_test(cfg.data, cfg.seed, cfg.model.img_size)
    model = build_model(cfg.model, cfg.peft, test.num_classes, cfg.seed)
    # server.device: a device the server lacks fails here, at start-up
    engine = make_engine(model, cfg.server.device, cfg.server.precision,
                         device_key="server.device")  # fmt: skip
    sharing = sharing_of(cfg.peft)  # FedSA-LoRA's B: trained on clients, never held here
    initial = to_arrayrecord(shared_state(model, sharing))  # shared trainable tensors only
    out_dir = Path(cfg.output.dir) / _run_name(
        cfg.output.run_name, cfg.peft.method, cfg.data.dataset, context.run_id
    )
    config = dataclasses.asdict(cfg)
    fingerprint = checkpoint.fingerprint(config, initial)
    strategy = make_strategy(cfg, initial)
    warn_dp_delta(cfg, len(list(grid.get_node_ids())))
    start_arrays, first_round, rows = initial, 1, []
    if cfg.output.resume:  # a missing or mismatched checkpoint fails here, at start-up
        ck = checkpoint.load(out_dir, fingerprint)
        start_arrays, first_round = ck.arrays, ck.server_round + 1
        rows = [RoundRecord.from_dict(r) for r in ck.rows]
        strategy.load_state(ck.strategy_state, ck.state_arrays)
        if sharing.local:
            log.warning("resuming: the clients' local tensors (%s) were in their Context.state "
                        "of the interrupted run; each client starts them again from the "
                        "initial values", ", ".join(sharing.local))  # fmt: skip
    n_params = sum(int(np.prod(a.shape, dtype=np.int64)) for a in initial.values())
    per_transfer = wire_bytes(initial)
    run = RunRecord(
        run_id=context.run_id,
        config=config,
        class_names=test.names(),
        trainable_params=n_params,
        trainable_tensors=len(initial),
        bytes_per_transfer=per_transfer,
        theoretical_bytes_per_transfer=theoretical_bytes(initial),
        wire=wire_metadata(cfg),
        server_engine={"device": engine.device.type, "precision": engine.precision.name},
        resumed_after_round=first_round - 1,
        rounds=rows,
    )
    recorder = RunRecorder(out_dir, run, test.num_classes, cfg.output)
    checkpointer = checkpoint.Checkpointer(out_dir, fingerprint) if cfg.output.checkpoint else None
    log.info("%s", RESULTS.format(out_dir))
    log.info(
        "Sending %d trainable tensors (%d parameters): %s bytes per client per direction",
        len(initial), n_params, f"{per_transfer:,}",
    )  # fmt: skip
    evaluate_fn = make_evaluate_fn(model, test, cfg.server.eval_batch_size, engine,
                                   cfg.train.feature_cache, sharing, cfg.server.evaluate_every,
                                   cfg.server.num_rounds)  # fmt: skip
    evaluate_fn = crash_after_aggregation(cfg.fault, evaluate_fn)  # a drill only when set
    try:
        if cfg.peft.head.init == "ncm" and first_round == 1:  # a round 0 of its own
            start_arrays = strategy.initialise_head(grid, start_arrays, head_keys(model),
                                                    cfg.server.round_timeout)  # fmt: skip
        result = strategy.start(
            grid=grid,
            initial_arrays=start_arrays,
            num_rounds=cfg.server.num_rounds,
            timeout=cfg.server.round_timeout,
            train_config=ConfigRecord(),  # lr per round from the strategy's lr_at
            evaluate_fn=evaluate_fn,
            first_round=first_round,
            recorder=recorder,
            checkpointer=checkpointer,
        )
    except BaseException as exc:
        try:
            recorder.finish("failed", error=repr(exc))
        except OSError as write_error:  # the disk that failed the run may refuse this too
            log.error("could not record the run's failure in %s: %s", out_dir, write_error)
        raise
    recorder.save_arrays(result.arrays)
    recorder.finish("completed")
    last = recorder.rows[-1]
    log.info(
        "Final server accuracy %.4f after %d rounds; %s bytes in total",
        last.accuracy,
        cfg.server.num_rounds,
        f"{last.cum_bytes:,}",
    )
