"""Aggregate a sweep's finished runs into ``RESULTS.md``, a CSV and matplotlib plots."""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.ticker import NullFormatter

from fedpeft.curves import curve, draw_accuracy, group_by, plt
from fedpeft.record import RunRecord, read_run
from fedpeft.run_folder import METRICS_JSON
from fedpeft.tools.sweepfile import Run, Sweep

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BEGIN, END = "<!-- sweep:begin -->", "<!-- sweep:end -->"

FIELDS = ("run", "setting", "method", "seed", "final_accuracy", "best_accuracy", "rounds",
          "trainable_params", "bytes_per_transfer", "total_bytes", "epsilon",
          "final_balanced_accuracy", "final_auc")  # fmt: skip


def markers(name: str = "") -> tuple[str, str]:
    """The RESULTS.md markers around a sweep's generated table (its own, if named)."""
    return (f"<!-- sweep:{name}:begin -->", f"<!-- sweep:{name}:end -->") if name else (BEGIN, END)


def epsilon(metrics: RunRecord) -> float | None:
    """The run's final ε: server-side (central DP) or the largest client's (local DP)."""
    return metrics.epsilon


def dp_mode(metrics: RunRecord) -> str:
    """The run's ``dp.mode`` as configured ("none" without DP)."""
    return metrics.config.get("dp", {}).get("mode", "none")


Records = list[tuple[Run, RunRecord]]


def _records(sweep: Sweep) -> Records:
    """Each run of ``sweep`` that has a ``metrics.json``, read once."""
    paths = [(run, sweep.results / run.name / METRICS_JSON) for run in sweep.runs]
    return [(run, read_run(path)) for run, path in paths if path.exists()]


def collect(sweep: Sweep, records: Records | None = None) -> list[dict[str, Any]]:
    """One summary row per finished run, plus its per-round curve under ``_rounds``."""
    rows = []
    for run, metrics in _records(sweep) if records is None else records:
        if metrics.status != "completed":
            continue
        rounds = metrics.rounds
        rows.append({
            "run": run.name, "setting": run.setting, "method": run.method, "seed": run.seed,
            "final_accuracy": rounds[-1].accuracy,
            # None in runs recorded before the server computed them
            "final_balanced_accuracy": rounds[-1].balanced_accuracy,
            "final_auc": rounds[-1].auc,
            "best_accuracy": max(r.accuracy for r in rounds if r.evaluated),
            "rounds": rounds[-1].round, "trainable_params": metrics.trainable_params,
            # measured: the last round's uplink per reply (the initial record under-counts:
            # identical zero-initialised tensors travel once in round 1)
            "bytes_per_transfer": rounds[-1].bytes_up // max(rounds[-1].accepted, 1),
            "total_bytes": rounds[-1].cum_bytes, "epsilon": epsilon(metrics),
            "dp_mode": dp_mode(metrics),
            # server.fraction-evaluate: the clients' accuracy on their held-out images
            "client_accuracy": rounds[-1].client_accuracy,
            "mean_bytes_up": sum(r.bytes_up for r in rounds) // max(sum(r.accepted for r
                                                                         in rounds), 1),
            "_rounds": curve(metrics),
        })  # fmt: skip
    return rows


def failures(sweep: Sweep, records: Records | None = None) -> list[dict[str, Any]]:
    """The runs whose latest attempt failed (the sweep keeps their ``metrics.json``)."""
    return [{"setting": run.setting, "method": run.method, "seed": run.seed,
             "dp_mode": dp_mode(record),
             "error": record.error or "failed"}
            for run, record in (_records(sweep) if records is None else records)
            if record.status == "failed"]  # fmt: skip


def plot_curves(rows: list[dict[str, Any]], x: str, target: float) -> Figure:
    """Accuracy (mean over seeds) vs ``x`` ("round" or "bytes"), a panel per setting."""
    settings = sorted({r["setting"] for r in rows})
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        draw_accuracy(ax, [r for r in rows if r["setting"] == setting], x, target, setting)
    fig.tight_layout()
    return fig


def plot_epsilon(rows: list[dict[str, Any]], failed: Sequence[dict[str, Any]] = ()
                 ) -> Figure | None:  # fmt: skip
    """Final accuracy vs ε of the DP runs: a panel per DP mode, a line per method.

    Local DP's ε bounds what one image changes, central DP's what one client's whole
    data changes, so they get separate panels. Each point is a setting's mean over its
    seeds (ε: the largest any of them spent, as in the table; accuracy ± its sd),
    joined in order of ε. Failed runs (``failures``) have no accuracy: their panel
    names them, so no method vanishes unsaid.
    """
    dp = [r for r in rows if r["epsilon"] is not None]
    if not dp:
        return None
    modes = sorted({r["dp_mode"] for r in dp})
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        runs = [r for r in dp if r["dp_mode"] == mode]
        ticks: set[float] = set()
        for (method,), by_method in sorted(group_by(runs, "method").items()):
            points = sorted(
                (max(r["epsilon"] for r in cell),
                 statistics.mean(r["final_accuracy"] for r in cell),
                 statistics.stdev(r["final_accuracy"] for r in cell) if len(cell) > 1 else 0.0)
                for cell in group_by(by_method, "setting").values()
            )  # fmt: skip
            eps, acc, sd = zip(*points, strict=True)
            ticks.update(eps)
            ax.errorbar(eps, acc, yerr=sd, marker="o", capsize=3, label=method)
        unit = {"local": "per image", "central": "per client"}.get(mode, "")
        ax.set(xscale="log", xlabel=f"ε, {mode} DP ({unit}; δ fixed)",
               ylabel="final server accuracy", title=f"{mode} DP: privacy vs accuracy")  # fmt: skip
        # The measured ε as the ticks: a log axis spanning less than a decade otherwise
        # labels its minor ticks, which overlap ("3×10⁰4×10⁰").
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(sorted(ticks), [f"{e:.3g}" for e in sorted(ticks)])
        lost = Counter(f["method"] for f in failed if f["dp_mode"] == mode)
        if lost:
            ax.annotate("failed, not plotted: " + ", ".join(
                f"{m} ({n} run{'s' * (n > 1)})" for m, n in sorted(lost.items())),
                xy=(0.02, 0.02), xycoords="axes fraction", fontsize=7)  # fmt: skip
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _mean_sd(values: list[float]) -> str:
    # One run has no sd: its value alone (the seeds column says 1), not "± 0.000".
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _recorded(runs: list[dict[str, Any]], key: str) -> str:
    """Mean ± sd of ``key`` over the runs that recorded it, "(k of n)" when not all did."""
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "—"
    return _mean_sd(values) + (f" ({len(values)} of {len(runs)})" if len(values) < len(runs)
                               else "")  # fmt: skip


def _failed_cell(failed: list[dict[str, Any]], columns: int) -> str:
    """A row for a setting × method with no completed run: why its runs failed."""
    first = failed[0]
    why = first["error"].replace("|", "\\|")
    why = why if len(why) <= 120 else why[:117] + "..."
    return (f"| {first['setting']} | {first['method']} | 0 ({len(failed)} failed) "
            f"| failed: {why} |" + " — |" * (columns - 4))  # fmt: skip


def _table(rows: list[dict[str, Any]], failed: Sequence[dict[str, Any]] = ()) -> str:
    # A cell whose runs failed (failures()) says how many: beside the seeds that completed,
    # or, with none, a row of its own with the first failure's error.
    # Runs that recorded them (fedpeft.metrics) add the final balanced accuracy and AUC.
    # With federated evaluation (server.fraction-evaluate), two more columns: the clients'
    # accuracy on their held-out images and the uplink per reply over all rounds (which
    # differs from the last round's where a method alternates what it sends: RoLoRA).
    ranked = any(r.get("final_auc") is not None for r in rows)
    clients = any(r.get("client_accuracy") is not None for r in rows)
    scores = (" final balanced acc | final AUC |", "---:|---:|")
    extra = (" clients' acc, held out (mean ± sd) | bytes up / reply, all rounds |", "---:|---:|")
    lines = ["| setting | method | seeds | final acc (mean ± sd) | best acc | trainable params "
             "| bytes up / client / round (last round) | total bytes | ε |"
             + (scores[0] if ranked else "") + (extra[0] if clients else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"
             + (scores[1] if ranked else "") + (extra[1] if clients else "")]  # fmt: skip
    columns = lines[1].count("|") - 1
    done, lost = group_by(rows, "setting", "method"), group_by(list(failed), "setting", "method")
    for cell in sorted(done.keys() | lost.keys()):
        if cell not in done:
            lines.append(_failed_cell(lost[cell], columns))
            continue
        (setting, method), runs = cell, done[cell]
        acc = [r["final_accuracy"] for r in runs]
        eps = [r["epsilon"] for r in runs if r["epsilon"] is not None]
        seeds = f"{len(runs)}" + (f" (+{len(lost[cell])} failed)" if cell in lost else "")
        line = (
            f"| {setting} | {method} | {seeds} | {_mean_sd(acc)} "
            f"| {max(r['best_accuracy'] for r in runs):.3f} | {runs[0]['trainable_params']:,} "
            f"| {runs[0]['bytes_per_transfer']:,} "
            f"| {statistics.mean(r['total_bytes'] for r in runs):,.0f} "
            f"| {f'{max(eps):.2f}' if eps else '—'} |"
        )
        if ranked:
            line += (f" {_recorded(runs, 'final_balanced_accuracy')} "
                     f"| {_recorded(runs, 'final_auc')} |")  # fmt: skip
        if clients:
            line += (f" {_recorded(runs, 'client_accuracy')} "
                     f"| {statistics.mean(r['mean_bytes_up'] for r in runs):,.0f} |")  # fmt: skip
        lines.append(line)
    return "\n".join(lines)


def write_report(sweep: Sweep, command: str) -> list[Path]:
    """Write the CSV, the plots and the generated part of ``RESULTS.md``; return paths."""
    records = _records(sweep)
    rows, failed = collect(sweep, records), failures(sweep, records)
    sweep.results.mkdir(parents=True, exist_ok=True)
    written = [sweep.results / (f"summary-{sweep.name}.csv" if sweep.name else "summary.csv")]
    with written[0].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plots = sweep.report / "plots" / sweep.name if sweep.name else sweep.report / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    figures = {"accuracy_vs_bytes.png": plot_curves(rows, "bytes", sweep.target_accuracy),
               "accuracy_vs_round.png": plot_curves(rows, "round", sweep.target_accuracy),
               "epsilon_vs_accuracy.png": plot_epsilon(rows, failed)} if rows else {}  # fmt: skip
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(plots / name, dpi=110)
            plt.close(fig)
            written.append(plots / name)
    begin, end = markers(sweep.name)
    lost = f", {len(failed)} failed (the sweep retries them)" if failed else ""
    generated = (f"{begin}\n{len(rows)} of {len(sweep.runs)} runs finished{lost}. Regenerate "
                 f"with `{command} --report`.\n\n{_table(rows, failed)}\n{end}")  # fmt: skip
    results_md = sweep.report / "RESULTS.md"
    text = results_md.read_text() if results_md.exists() else f"# Results\n\n{begin}\n{end}\n"
    if begin not in text:  # a new sweep's section goes at the end
        text = f"{text.rstrip()}\n\n{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    results_md.write_text(head + generated + tail)
    return [*written, results_md]
