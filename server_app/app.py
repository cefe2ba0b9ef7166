"""ServerApp: seeded reference model → PEFT FedAvg → central evaluation → results."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedpeft.arrays import theoretical_bytes, to_arrayrecord, trainable_state, wire_bytes
from fedpeft.data import load_test
from fedpeft.model import build_model
from fedpeft.runtime import run_config, setup_logging

from .evaluation import make_evaluate_fn
from .results import RunRecorder
from .strategy import PeftFedAvg
from .validation import reference_specs

log = logging.getLogger(__name__)

app = ServerApp()


def _run_name(cfg_name: str, method: str, dataset: str, run_id: int) -> str:
    if cfg_name:
        return cfg_name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{method}-{Path(dataset).name}-{stamp}-{run_id}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run federated PEFT fine-tuning with central evaluation each round."""
    setup_logging()
    cfg = run_config(context.run_config)  # a bad key or value fails here, at start-up
    test = load_test(cfg.data, cfg.seed, cfg.model.img_size)
    model = build_model(cfg.model, cfg.peft, test.num_classes, cfg.seed)
    initial = to_arrayrecord(trainable_state(model))  # trainable tensors only
    out_dir = Path(cfg.output.dir) / _run_name(
        cfg.output.run_name, cfg.peft.method, cfg.data.dataset, context.run_id
    )
    n_params = sum(int(np.prod(a.shape, dtype=np.int64)) for a in initial.values())
    per_transfer = wire_bytes(initial)
    recorder = RunRecorder(
        out_dir,
        {
            "run_id": context.run_id,
            "config": dataclasses.asdict(cfg),
            "trainable_params": n_params,
            "trainable_tensors": len(initial),
            "bytes_per_transfer": per_transfer,
            "theoretical_bytes_per_transfer": theoretical_bytes(initial),
        },
    )
    log.info("Results go to %s", out_dir)
    log.info(
        "Sending %d trainable tensors (%d parameters): %s bytes per client per direction",
        len(initial), n_params, f"{per_transfer:,}",
    )  # fmt: skip
    server = cfg.server
    strategy = PeftFedAvg(
        reference=reference_specs(initial),
        fraction_train=server.fraction_train,
        fraction_evaluate=server.fraction_evaluate,
        min_train_nodes=server.min_train_nodes,
        min_evaluate_nodes=server.min_train_nodes if server.fraction_evaluate else 0,
        min_available_nodes=server.min_train_nodes,
    )
    evaluate_fn = make_evaluate_fn(model, test, server.eval_batch_size, strategy, recorder)
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=server.num_rounds,
            timeout=server.round_timeout,
            train_config=ConfigRecord({"lr": cfg.lr}),
            evaluate_fn=evaluate_fn,
        )
    except BaseException as exc:
        recorder.finish("failed", error=repr(exc))
        raise
    final = result.arrays if result.arrays is not None else initial
    recorder.save_arrays(final)
    last = recorder.rows[-1]
    recorder.finish(
        "completed",
        final_accuracy=last["accuracy"],
        diverged=any(r["diverged"] for r in recorder.rows),
        at_chance=bool(last["at_chance"]),
        total_bytes=last["cum_bytes"],
    )
    log.info(
        "Final server accuracy %.4f after %d rounds; %s bytes in total",
        last["accuracy"],
        server.num_rounds,
        f"{last['cum_bytes']:,}",
    )
