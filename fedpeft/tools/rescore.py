"""Add the balanced accuracy and ROC AUC to runs recorded before the server computed them.

    .venv/bin/python -m fedpeft.tools.rescore RUN_DIR [RUN_DIR ...] [--into RESULTS_DIR]

Each run's final global model is rebuilt from its ``metrics.json`` config and
``final_trainable.safetensors`` (:func:`fedpeft.tools.export.writer.global_model`, as
``fedpeft-export`` does), the run's test split is loaded as its ServerApp loaded it,
and :func:`fedpeft.training.evaluate` scores it on the engine the run's server evaluated
on (its recorded device type and precision; runs that did not record them: the config's
``server.device`` and ``train.precision``, what their ServerApp used). The rescore is
written only when it reproduces the accuracy the run recorded for its last round
exactly (and its loss to 1e-6): otherwise this is not the model or the split the run
evaluated, and the run is refused, naming both values. The last round then gets
``balanced_accuracy`` and ``auc``; earlier rounds keep None (their tensors are gone).

``--into DIR``: write into ``DIR/<run name>/metrics.json`` (a results folder that kept
only the metrics), after checking that it records the same run.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from ..data import load_test
from ..device import set_threads
from ..engine import make_engine
from ..logs import setup_logging
from ..record import RunRecord, read_run, write_run
from ..run_folder import METRICS_JSON
from ..training import evaluate
from .export.writer import global_model

log = logging.getLogger(__name__)

LOSS_TOLERANCE = 1e-6  # relative; the accuracy must match exactly
SCORES = ("balanced_accuracy", "auc")  # the RoundRecord fields a rescore fills


def _unscored(record: RunRecord) -> dict:
    """The record without the fields a rescore adds (so a rescore can be repeated)."""
    out = record.to_dict()
    out["rounds"] = [{k: v for k, v in r.items() if k not in SCORES} for r in out["rounds"]]
    return out


def rescore(run_dir: Path, into: Path | None = None) -> tuple[float, float]:
    """Score ``run_dir``'s final model; record it in ``into`` (default: ``run_dir``).

    Returns the balanced accuracy and the AUC. Raises ``ValueError`` when the target
    records another run, or when the rescore does not reproduce its last round.
    """
    glob = global_model(run_dir, "final")
    target = into or run_dir
    record = read_run(target / METRICS_JSON)
    if _unscored(record) != _unscored(read_run(run_dir / METRICS_JSON)):
        raise ValueError(f"{target / 'metrics.json'} records another run than {run_dir}")
    if record.status != "completed" or not record.rounds or not record.rounds[-1].evaluated:
        raise ValueError(f"{run_dir}: not a completed run with an evaluated last round")
    cfg = glob.config
    set_threads(cfg.train.num_threads)
    test = load_test(cfg.data, cfg.seed, cfg.model.img_size)
    recorded = record.server_engine  # a CUDA-evaluated run is rescored on CUDA, not `auto`
    engine = make_engine(glob.model, recorded.get("device", cfg.server.device),
                         recorded.get("precision", cfg.train.precision),
                         device_key="server.device")  # fmt: skip
    outcome = evaluate(glob.model, test, cfg.server.eval_batch_size, engine,
                       cfg.train.feature_cache, scores=True)  # fmt: skip
    last = record.rounds[-1]
    if outcome.accuracy != last.accuracy or not math.isclose(
        outcome.loss, last.loss, rel_tol=LOSS_TOLERANCE
    ):
        raise ValueError(f"{run_dir}: rescored accuracy {outcome.accuracy} and loss "
                         f"{outcome.loss}, but round {last.round} recorded {last.accuracy} "
                         f"and {last.loss}: not the model or split the run evaluated")  # fmt: skip
    last.balanced_accuracy, last.auc = outcome.balanced_accuracy, outcome.auc
    write_run(record, target)
    return outcome.balanced_accuracy, outcome.auc


def main(argv: list[str] | None = None) -> int:
    """``python -m fedpeft.tools.rescore``; returns the number of runs refused."""
    p = argparse.ArgumentParser(prog="python -m fedpeft.tools.rescore", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("runs", nargs="+", type=Path, help="run folders with their final tensors")
    p.add_argument("--into", type=Path, help="results folder holding the same runs' metrics")
    args = p.parse_args(argv)
    setup_logging()
    refused = 0
    for run_dir in args.runs:
        into = args.into / run_dir.name if args.into else None
        try:
            balanced, auc = rescore(run_dir, into)
        except (ValueError, FileNotFoundError) as exc:
            log.error("%s", exc)
            refused += 1
            continue
        log.info("%s: balanced accuracy %.4f, AUC %.4f", into or run_dir, balanced, auc)
    return refused


if __name__ == "__main__":
    sys.exit(main())
