"""Per-round results of a run: ``metrics.json``, ``metrics.csv`` and final tensors."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord
from safetensors.numpy import save_file

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "round", "accuracy", "loss", "clients", "accepted", "rejected", "failed", "no_reply",
    "bytes_down", "bytes_up", "theoretical_down", "theoretical_up",
    "cum_bytes", "wall_seconds", "train_seconds", "failed_round",
    "dp_epsilon", "dp_epsilon_max",
)  # fmt: skip


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunRecorder:
    """Collects one row per round and rewrites the result files after each."""

    def __init__(
        self, out_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]] | None = None
    ) -> None:
        self.out_dir = out_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.summary = dict(summary, status="running")
        self.rows: list[dict[str, Any]] = list(rows or [])  # rows of a resumed run
        self.flush()

    def add(self, row: dict[str, Any]) -> None:
        """Append a round's row and write the files."""
        self.rows.append(row)
        self.flush()

    def finish(self, status: str, **extra: Any) -> None:
        """Record the final status (``completed`` or ``failed``) and write."""
        self.summary.update(extra, status=status)
        self.flush()

    def flush(self) -> None:
        """Write ``metrics.json`` and ``metrics.csv`` atomically."""
        _atomic_write(
            self.out_dir / "metrics.json",
            json.dumps({**self.summary, "rounds": self.rows}, indent=2, default=str),
        )
        tmp = self.out_dir / "metrics.csv.tmp"
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.out_dir / "metrics.csv")

    def save_arrays(self, arrays: ArrayRecord, name: str = "final_trainable.safetensors") -> Path:
        """Save the global trainable tensors as safetensors."""
        path = self.out_dir / name
        tmp = path.with_suffix(".tmp")
        save_file({k: v.numpy() for k, v in arrays.items()}, str(tmp))
        os.replace(tmp, path)
        log.info("Saved final trainable tensors to %s", path)
        return path
