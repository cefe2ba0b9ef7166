"""One run's picture: server accuracy and cumulative bytes by round (``curves.png``).

The server's recorder writes ``<run dir>/curves.png`` when a run completes; the
accuracy panel (:func:`draw_accuracy`, also the sweep report's) has the best round
marked. ``python -m fedpeft.curves <metrics.json> [out.png]`` draws it for
a run already on disk (the README's picture, from ``docs/results/iid-10-rounds-lora-s1``).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

from fedpeft.record import RunRecord, best_row, read_run
from fedpeft.run_folder import CURVES

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FILENAME = CURVES


def curve(metrics: RunRecord) -> list[tuple[int, int, float]]:
    """A run's ``(round, cumulative bytes, server accuracy)`` points."""
    return [
        (r.round, r.cum_bytes, r.accuracy) for r in metrics.rounds if r.evaluated
    ]  # server.evaluate-every: evaluated rounds only


def group_by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    """``rows`` grouped by the values of ``keys``, in their order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def mean_curve(runs: list[dict[str, Any]]) -> tuple[list[float], list[float], list[float]]:
    """Rounds, cumulative bytes and accuracy, each the mean over ``runs``' curves."""
    length = min(len(r["_rounds"]) for r in runs)
    cols = [[r["_rounds"][i] for r in runs] for i in range(length)]
    return ([statistics.mean(c[0] for c in col) for col in cols],
            [statistics.mean(c[1] for c in col) for col in cols],
            [statistics.mean(c[2] for c in col) for col in cols])  # fmt: skip


def draw_accuracy(ax: Axes, rows: list[dict[str, Any]], x: str, target: float = 0.0,
                  title: str = "") -> None:  # fmt: skip
    """Accuracy (mean over seeds) vs ``x`` ("round" or "bytes") on ``ax``, a line per method.

    ``rows`` are :func:`fedpeft.tools.report.collect`'s (only ``method`` and ``_rounds`` are read).
    """
    for (method,), runs in sorted(group_by(rows, "method").items()):
        rnd, cum, acc = mean_curve(runs)
        if x == "round":
            ax.plot(rnd, acc, marker="o", label=method)
        else:  # round 0 has sent nothing: no point on a log axis
            ax.plot(cum[1:], acc[1:], marker="o", label=method)
    if target:
        ax.axhline(target, color="grey", linestyle="--", label=f"target {target:g}")
    if x == "bytes":
        ax.set_xscale("log")
    ax.set(title=title, xlabel="round" if x == "round" else "cumulative bytes (up + down)",
           ylabel="server accuracy")  # fmt: skip
    ax.legend(fontsize=7)


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
