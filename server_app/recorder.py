"""The one recorder of a run: a round record per round, the result files, the checkpoint.

The round loop hands it each evaluated round (:class:`~server_app.rounds.RoundEnd`). It
makes the round's :class:`~fedpeft.record.RoundRecord`, adding what only the run knows
(wall time, cumulative bytes, health flags), logs it, rewrites ``metrics.json`` and
``metrics.csv`` atomically, and writes the checkpoint from the same round end and rows.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord
from safetensors.numpy import save_file

from fedpeft.record import CSV_FIELDS, RoundRecord, RunRecord

from . import checkpoint
from .rounds import RoundEnd

log = logging.getLogger(__name__)

# Accuracy within this margin of 1/num_classes counts as "at chance".
CHANCE_MARGIN = 0.02


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    fingerprint : dict, optional
        The checkpoint fingerprint; ``None`` writes no checkpoint.

    """

    def __init__(self, out_dir: Path, run: RunRecord, num_classes: int,
                 fingerprint: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.out_dir = out_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run = run
        self.run.status = "running"
        self.chance = 1.0 / num_classes
        self.fingerprint = fingerprint
        self._last = time.perf_counter()
        self.flush()

    @property
    def rows(self) -> list[RoundRecord]:
        """The rounds recorded so far."""
        return self.run.rounds

    def round_end(self, end: RoundEnd) -> None:
        """Record one evaluated round, write the files and (if enabled) the checkpoint."""
        now = time.perf_counter()
        accuracy = float(end.evaluation.get("accuracy", math.nan))
        loss = float(end.evaluation.get("loss", math.nan))
        row = RoundRecord(round=end.server_round, accuracy=accuracy, loss=loss, **end.counts)
        row.wall_seconds, self._last = now - self._last, now
        before = self.rows[-1].cum_bytes if self.rows else 0
        row.cum_bytes = before + row.bytes_down + row.bytes_up
        row.diverged = not math.isfinite(loss)
        row.at_chance = end.server_round > 0 and accuracy <= self.chance + CHANCE_MARGIN
        self.rows.append(row)
        self.flush()
        self._log(row)
        if self.fingerprint is not None:
            state = {"fingerprint": self.fingerprint, "strategy": end.strategy_state,
                     "rows": [r.to_dict() for r in self.rows]}  # fmt: skip
            checkpoint.save(self.out_dir, end.arrays, end.server_round, state,
                            end.strategy_arrays)  # fmt: skip

    def _log(self, row: RoundRecord) -> None:
        log.info(
            "round %d: server accuracy %.4f, loss %.4f | bytes down %s (theory %s), "
            "up %s (theory %s), cumulative %s",
            row.round, row.accuracy, row.loss,
            f"{row.bytes_down:,}", f"{row.theoretical_down:,}",
            f"{row.bytes_up:,}", f"{row.theoretical_up:,}", f"{row.cum_bytes:,}",
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
        """Record the final status (``completed`` or ``failed``) and the run's totals."""
        self.run.status, self.run.error = status, error
        if status == "completed" and self.rows:
            last = self.rows[-1]
            self.run.final_accuracy = last.accuracy
            self.run.diverged = any(r.diverged for r in self.rows)
            self.run.at_chance = last.at_chance
            self.run.failed_rounds = sum(r.failed_round for r in self.rows)
            self.run.total_bytes = last.cum_bytes
        self.flush()

    def flush(self) -> None:
        """Write ``metrics.json`` and ``metrics.csv`` atomically."""
        _atomic_write(self.out_dir / "metrics.json",
                      json.dumps(self.run.to_dict(), indent=2, default=str))  # fmt: skip
        tmp = self.out_dir / "metrics.csv.tmp"
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(r.to_dict() for r in self.rows)
        os.replace(tmp, self.out_dir / "metrics.csv")

    def save_arrays(self, arrays: ArrayRecord, name: str = "final_trainable.safetensors") -> Path:
        """Save the global trainable tensors as safetensors."""
        path = self.out_dir / name
        tmp = path.with_suffix(".tmp")
        save_file({k: v.numpy() for k, v in arrays.items()}, str(tmp))
        os.replace(tmp, path)
        log.info("Saved final trainable tensors to %s", path)
        return path
