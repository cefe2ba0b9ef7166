"""The one recorder of a run: a round record per round and the result files.

The round loop hands it each evaluated round (:class:`~server_app.rounds.RoundEnd`). It
makes the round's :class:`~fedpeft.record.RoundRecord`, adding what only the run knows
(wall time, cumulative bytes, health flags), logs it, rewrites ``metrics.json`` and
``metrics.csv`` atomically, keeps the best round's tensors (``best_trainable``), every
``output.save-every``-th round's (``round_<N>_trainable``), writes TensorBoard events
(``output.tensorboard``), and at the end of a completed run ``curves.png``. The
checkpoint is the next step's (:class:`~server_app.checkpoint.Checkpointer`), from the
same round end, :attr:`RunRecorder.rows` and :attr:`RunRecorder.best`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from flwr.app import ArrayRecord, MetricRecord
from safetensors.numpy import save_file

from fedpeft.config import OutputConfig
from fedpeft.progress import eta, round_line
from fedpeft.record import RoundRecord, RunRecord, best_row, write_run
from fedpeft.run_folder import BEST_TRAINABLE, FINAL_TRAINABLE, round_file

from . import checkpoint
from .rounds import RoundEnd
from .tensorboard_events import EventWriter

log = logging.getLogger(__name__)

# Accuracy within this margin of 1/num_classes counts as "at chance".
CHANCE_MARGIN = 0.02

FINAL_FILE = FINAL_TRAINABLE
BEST_FILE = BEST_TRAINABLE


def _optional(evaluation: MetricRecord, key: str) -> float | None:
    """``evaluation[key]`` as a float; None where the round was not evaluated."""
    return float(evaluation[key]) if key in evaluation else None


class RunRecorder:
    """Records every round of a run and rewrites the result files after each.

    Parameters
    ----------
    out_dir : Path
        The run folder.
    run : RunRecord
        The run's summary; its ``rounds`` are those of a resumed run.
    num_classes : int
        For the at-chance flag.
    output : OutputConfig, optional
        ``output.*``: with ``resume`` the best round comes back from the checkpoint
        (already checked by :func:`~server_app.checkpoint.load`); ``save-every``,
        ``tensorboard``. Default: the defaults (none of them).

    """

    def __init__(self, out_dir: Path, run: RunRecord, num_classes: int,
                 output: OutputConfig | None = None) -> None:  # fmt: skip
        self.out_dir = out_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run = run
        self.run.status = "running"
        self.chance = 1.0 / num_classes
        self.output = output or OutputConfig()
        self.best: checkpoint.Best | None = None
        self._best_from = 0  # rows before this one have no tensors here (an old checkpoint)
        if self.output.resume:
            self._resume_best()
        first = self.rows[-1].round + 1 if self.rows else 0
        self.events = EventWriter(out_dir, first) if self.output.tensorboard else None
        self._last = self._started = time.perf_counter()
        self._first = first  # the first round this process records (its ETA counts from it)
        self.flush()

    @property
    def rows(self) -> list[RoundRecord]:
        """The rounds recorded so far."""
        return self.run.rounds

    def round_end(self, end: RoundEnd) -> None:
        """Record one evaluated round and write the files."""
        now = time.perf_counter()
        accuracy = float(end.evaluation.get("accuracy", math.nan))
        loss = float(end.evaluation.get("loss", math.nan))
        row = RoundRecord(round=end.server_round, accuracy=accuracy, loss=loss,
                          balanced_accuracy=_optional(end.evaluation, "balanced-accuracy"),
                          auc=_optional(end.evaluation, "auc"), **end.counts)  # fmt: skip
        row.wall_seconds, self._last = now - self._last, now
        before = self.rows[-1].cum_bytes if self.rows else 0
        row.cum_bytes = before + row.bytes_down + row.bytes_up
        row.diverged = row.evaluated and not math.isfinite(loss)
        row.at_chance = (row.evaluated and end.server_round > 0
                         and accuracy <= self.chance + CHANCE_MARGIN)  # fmt: skip
        self.rows.append(row)
        self._track_best(row, end.arrays)
        every = self.output.save_every
        if every and end.server_round > 0 and end.server_round % every == 0:
            self._write(end.arrays, round_file(end.server_round))
        self.flush()
        self._log(row)
        if self.events is not None:
            self.events.write(self.rows)

    def _resume_best(self) -> None:
        """Take the best round from the checkpoint and rewrite its tensors' file.

        The file a killed run left may be of a round after the checkpoint's; the
        rewritten one is what an uninterrupted run has at this round.
        """
        self.best = checkpoint.read_best(self.out_dir)
        if self.best is None:
            self._best_from = len(self.rows)
            log.warning(
                "The checkpoint keeps no best round (an older version wrote it): best_round "
                "counts the rounds after %d only", self.rows[-1].round if self.rows else 0,
            )  # fmt: skip
            return
        self._write(self.best.arrays, BEST_FILE)
        self.run.best_round = self.best.server_round
        self.run.best_accuracy = next(r.accuracy for r in self.rows
                                      if r.round == self.best.server_round)  # fmt: skip

    def _track_best(self, row: RoundRecord, arrays: ArrayRecord) -> None:
        """Keep ``row``'s tensors if it is the best round so far (the earliest of ties)."""
        best = best_row(self.rows[self._best_from :])
        if best is None:
            return
        if best is row:
            self.best = checkpoint.Best(row.round, arrays)
            self._write(arrays, BEST_FILE)
        self.run.best_round, self.run.best_accuracy = best.round, best.accuracy

    def _log(self, row: RoundRecord) -> None:
        num_rounds = max(int(self.run.config.get("server", {}).get("num_rounds", 0)), row.round)
        elapsed = time.perf_counter() - self._started
        # rounds trained in this process so far (round 0 only evaluates)
        trained = row.round - max(self._first, 1) + 1
        left = eta(trained, num_rounds - max(self._first, 1) + 1, elapsed) if trained else math.nan
        ratios = ", ".join(f"{name} {value:.3f}×" for name, value in
                           (("up", row.uplink_ratio), ("down", row.downlink_ratio))
                           if value is not None)  # fmt: skip
        log.info("%s", round_line(row.round, num_rounds, row.accuracy, row.loss, row.cum_bytes,
                                  elapsed, left, f"{ratios} fp32" if ratios else ""))  # fmt: skip
        if row.client_accuracy is not None:
            log.info("round %d: accuracy %.4f on %d clients' held-out images, with their local "
                     "tensors (global model on the test split: %.4f)", row.round,
                     row.client_accuracy, row.clients_evaluated, row.accuracy)  # fmt: skip
        log.debug(
            "round %d: bytes down %s (theory %s), up %s (theory %s)",
            row.round, f"{row.bytes_down:,}", f"{row.theoretical_down:,}",
            f"{row.bytes_up:,}", f"{row.theoretical_up:,}",
        )  # fmt: skip
        if row.diverged:
            log.warning(
                "round %d: DIVERGED - the global model's loss is NaN/Inf; lower the learning rate",
                row.round,
            )
        elif row.at_chance:
            log.warning("round %d: accuracy %.4f is at chance level (%.4f)", row.round,
                        row.accuracy, self.chance)  # fmt: skip

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the final status (``completed`` or ``failed``) and the run's totals.

        A completed run also gets ``curves.png`` (:mod:`fedpeft.curves`).
        """
        self.run.status, self.run.error = status, error
        if self.events is not None:
            self.events.close()
        if status == "completed" and self.rows:
            last = self.rows[-1]
            self.run.final_accuracy = last.accuracy
            self.run.diverged = any(r.diverged for r in self.rows)
            self.run.at_chance = last.at_chance
            self.run.failed_rounds = sum(r.failed_round for r in self.rows)
            self.run.total_bytes = last.cum_bytes
        self.flush()
        if status == "completed" and self.rows:
            from fedpeft.curves import FILENAME, write_curves  # matplotlib: only here

            path = write_curves(self.run, self.out_dir / FILENAME, title=self.out_dir.name)
            log.info("Saved accuracy and bytes by round to %s", path)

    def flush(self) -> None:
        """Write ``metrics.json`` and ``metrics.csv`` atomically."""
        write_run(self.run, self.out_dir)

    def save_arrays(self, arrays: ArrayRecord, name: str = FINAL_FILE) -> Path:
        """Save the global trainable tensors as safetensors."""
        path = self._write(arrays, name)
        log.info("Saved final trainable tensors to %s", path)
        return path

    def _write(self, arrays: ArrayRecord, name: str) -> Path:
        path = self.out_dir / name
        tmp = path.with_suffix(".tmp")
        save_file({k: v.numpy() for k, v in arrays.items()}, str(tmp))
        os.replace(tmp, path)
        log.debug("Saved %s", path)
        return path
