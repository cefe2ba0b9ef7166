"""One run's picture: server accuracy and cumulative bytes by round (``curves.png``).

The server's recorder writes ``<run dir>/curves.png`` when a run completes; the
accuracy panel is the sweep report's (:func:`fedpeft.report.draw_accuracy`), with the
best round marked. ``python -m fedpeft.curves <metrics.json> [out.png]`` draws it for
a run already on disk (the README's picture, from ``docs/results/iid-10-rounds-lora-s1``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedpeft.record import RunRecord, best_row, read_run
from fedpeft.report import curve, draw_accuracy, plt
from fedpeft.run_folder import CURVES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FILENAME = CURVES


def run_figure(run: RunRecord, title: str = "") -> Figure:
    """Accuracy (best round starred) and cumulative bytes (up + down) by round, side by side."""
    method = run.config.get("peft", {}).get("method", "run")
    fig, (acc_ax, bytes_ax) = plt.subplots(1, 2, figsize=(8, 3))
    draw_accuracy(acc_ax, [{"method": method, "_rounds": curve(run)}], "round", title=title)
    best = best_row(run.rounds)
    if best is not None:
        acc_ax.plot(best.round, best.accuracy, "*", markersize=12, color="tab:red",
                    label=f"best: round {best.round}")  # fmt: skip
        acc_ax.legend(fontsize=7)
    bytes_ax.plot([r.round for r in run.rounds], [r.cum_bytes for r in run.rounds], marker="o")
    bytes_ax.set(title="traffic", xlabel="round", ylabel="cumulative bytes (up + down)")
    fig.tight_layout()
    return fig


def write_curves(run: RunRecord, path: Path, title: str = "") -> Path:
    """Save :func:`run_figure` as a PNG at ``path`` atomically; return ``path``."""
    fig = run_figure(run, title)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m fedpeft.curves <metrics.json> [out.png]`` (default: beside the file)."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print("usage: python -m fedpeft.curves <metrics.json> [out.png]", file=sys.stderr)
        return 2
    metrics = Path(args[0])
    out = Path(args[1]) if len(args) == 2 else metrics.with_name(FILENAME)
    print(write_curves(read_run(metrics), out, title=metrics.parent.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
