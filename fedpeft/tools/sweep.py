"""Run methods × settings × seeds of a sweep file, skipping finished runs (``fedpeft-sweep``).

    .venv/bin/fedpeft-sweep conf/sweep-cpu.toml            # run what is missing, then report
    .venv/bin/fedpeft-sweep conf/sweep-cpu.toml --report   # only rebuild RESULTS.md and plots
    .venv/bin/fedpeft-sweep SWEEP.toml --gpus-per-client 0.25  # each run: 4 clients per GPU
    .venv/bin/fedpeft-sweep SWEEP.toml --cpus-per-client 2     # each run: one actor per 2 CPUs
    .venv/bin/fedpeft-sweep SWEEP.toml --in-process --jobs 2   # 2 runs at once, one core each
    .venv/bin/fedpeft-sweep SWEEP.toml --seeds 1               # one seed of every cell first

A sweep file names a base preset, the methods, the seeds and the settings (each a
run-config string). Several sweep files can report into one ``RESULTS.md``: a sweep
with a ``name`` writes its table between its own markers, ``summary-<name>.csv`` and
``plots/<name>/``. Every finished run's ``metrics.json`` / ``metrics.csv`` (never
tensors; with ``output.tensorboard`` also its ``tb/`` events, a few KB) is copied to
``<results>/<setting>-<method>-s<seed>/``, with the run's whole output (``run.log``,
failed runs' too); after each run the log says runs done / to do, elapsed and ETA. A
run whose copy says ``completed`` and was made with the run config the sweep file now
asks for is skipped, so an interrupted sweep resumes where it stopped, on any machine
with the same files. A copy made with another config (the preset or a default changed since)
is logged with the keys that differ and run again.

``--in-process`` makes each run a ``python -m fedpeft.tools.inprocess`` process (the ServerApp
and ClientApps on an in-process Grid: the same code and messages, without the ~55 s of
SuperLink, Ray and actor start-up a short run pays); ``--jobs N`` runs N of them at once,
each pinned to its own share of the CPUs (``OMP_NUM_THREADS`` and affinity, as Ray gives
an actor its CPUs), so on 2 cores two single-threaded runs share no core.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from fedpeft.config import app_config, parse_run_config
from fedpeft.host import host_cpus
from fedpeft.progress import duration, eta
from fedpeft.record import read_run
from fedpeft.run_folder import METRICS_CSV, METRICS_JSON
from fedpeft.tools.launch import LOG_FILE, non_negative, whole_cpus
from fedpeft.tools.report import write_report
from fedpeft.tools.sweepfile import Run, Sweep, load_sweep

__all__ = ["Run", "Sweep", "is_done", "load_sweep", "resolved_config", "run_sweep", "simulate"]

log = logging.getLogger("fedpeft.tools.sweep")

TB_DIR = "tb"  # a run's TensorBoard events (server_app.tensorboard_events.TB_DIR)
# A run another sweep finished (same name and config, same results folder) after this one
# listed what it had to do: it is checked again just before it starts.
DONE_ELSEWHERE = "completed elsewhere"


Config = dict[str, Any]


def resolved_config(run: Run) -> Config:
    """The run config ``run`` gets from the app in the current directory.

    As metrics.json records it, less ``output.*`` (where the run wrote, not what it did).
    """
    cfg = dataclasses.asdict(parse_run_config(app_config(Path.cwd(), list(run.overrides))))
    cfg.pop("output", None)
    return json.loads(json.dumps(cfg))


def _differences(recorded: Config, expected: Config, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, as ``key: recorded -> expected``.

    Keys the recorded run did not have are skipped: a key added later keeps, by this
    project's rule, the old behaviour as its default.
    """
    out = []
    for key, want in expected.items():
        if key not in recorded:
            continue
        have = recorded[key]
        if isinstance(want, dict) and isinstance(have, dict):
            out += _differences(have, want, f"{prefix}{key}.")
        elif have != want:
            out.append(f"{prefix}{key}: {have!r} -> {want!r}")
    return out


def is_done(results: Path, run: Run, expected: Config | None = None) -> bool:
    """Whether ``run`` has a completed copy in ``results`` made with ``expected``'s config."""
    path = results / run.name / METRICS_JSON
    if not path.exists():
        return False
    record = read_run(path)
    if record.status != "completed":
        return False
    stale = _differences(record.config, expected) if expected is not None else []
    if stale:
        log.warning("%s was run with another config, running it again: %s", run.name,
                    "; ".join(stale))  # fmt: skip
    return not stale


def simulate(run: Run, num_supernodes: int, out_dir: Path, gpus_per_client: float = 0.0,
             cpus_per_client: int = 1) -> Path:  # fmt: skip
    """Run one simulation with ``fedpeft-sim``; return its run folder.

    ``gpus_per_client`` > 0 and ``cpus_per_client`` are passed on as
    ``--gpus-per-client`` and ``--cpus-per-client`` (the machine's, not the run's:
    they are not part of the run config the sweep compares).
    """
    cmd = [sys.executable, "-m", "fedpeft.tools.launch", "--num-supernodes", str(num_supernodes),
           "--cpus-per-client", str(cpus_per_client)]  # fmt: skip
    if gpus_per_client > 0:
        cmd += ["--gpus-per-client", repr(gpus_per_client)]
    for item in (*run.overrides, f"output.dir='{out_dir}' output.run-name='{run.name}'"):
        cmd += ["-c", item]
    with (out_dir / f"{run.name}.log").open("w") as logfile:
        subprocess.run(cmd, stdout=logfile, stderr=subprocess.STDOUT, check=False)
    return out_dir / run.name


class InProcess:
    """Runner: each run a ``python -m fedpeft.tools.inprocess`` process on its own CPUs.

    ``jobs`` slots split the CPUs this process may use into disjoint sets (the first
    ``len % jobs`` one larger); a run takes a free slot, so at most ``jobs`` run at once.
    """

    def __init__(self, jobs: int = 1) -> None:
        cpus = sorted(host_cpus())
        if not 1 <= jobs <= len(cpus):
            raise ValueError(f"--jobs {jobs}: must be between 1 and the {len(cpus)} CPUs here")
        self.slots: queue.Queue[list[int]] = queue.Queue()
        for k in range(jobs):
            self.slots.put(cpus[k::jobs])

    def __call__(self, run: Run, num_supernodes: int, out_dir: Path) -> Path:
        cpus = self.slots.get()
        try:
            cmd = [sys.executable, "-m", "fedpeft.tools.inprocess", "--num-supernodes",
                   str(num_supernodes)]  # fmt: skip
            for item in (*run.overrides, f"output.dir='{out_dir}' output.run-name='{run.name}'"):
                cmd += ["-c", item]
            env = dict(os.environ, OMP_NUM_THREADS=str(len(cpus)))
            pin = functools.partial(os.sched_setaffinity, 0, cpus)
            with (out_dir / f"{run.name}.log").open("w") as logfile:
                subprocess.run(cmd, stdout=logfile, stderr=subprocess.STDOUT, check=False,
                               env=env, preexec_fn=pin)  # fmt: skip
        finally:
            self.slots.put(cpus)
        run_dir = out_dir / run.name
        if run_dir.is_dir():  # the run's whole output beside its metrics, as fedpeft-sim's
            shutil.copy2(out_dir / f"{run.name}.log", run_dir / LOG_FILE)
        return run_dir


def _collect(run: Run, run_dir: Path, results: Path) -> str:
    """Copy a finished run's metrics (and log) to ``results``; return its status.

    A failed run's metrics are kept too (the report names its error); :func:`is_done`
    does not count them, so the next sweep runs it again.
    """
    metrics = run_dir / METRICS_JSON
    status = read_run(metrics).status if metrics.exists() else "no metrics"
    dest = results / run.name
    if metrics.exists():
        dest.mkdir(parents=True, exist_ok=True)
        for name in (METRICS_JSON, METRICS_CSV):
            shutil.copy2(run_dir / name, dest / name)
        # tensorboard --logdir <results> compares the completed runs
        if status == "completed" and (run_dir / TB_DIR).is_dir():
            shutil.rmtree(dest / TB_DIR, ignore_errors=True)
            shutil.copytree(run_dir / TB_DIR, dest / TB_DIR)
    if (run_dir / LOG_FILE).is_file():  # a failed run's too: why it failed
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / LOG_FILE, dest / LOG_FILE)
    return status


def run_sweep(
    sweep: Sweep,
    runner: Callable[[Run, int, Path], Path] = simulate,
    resolve: Callable[[Run], Config] = resolved_config,
    jobs: int = 1,
) -> list[tuple[Run, str]]:
    """Run every unfinished or stale run in order, ``jobs`` at once; copy its metrics.

    ``resolve`` gives the config a run should have been made with. Returns the
    (run, status) pairs of the runs made, in the order they finished.
    """
    todo = [r for r in sweep.runs if not is_done(sweep.results, r, resolve(r))]
    log.info("%d of %d runs to do (%d already done)", len(todo), len(sweep.runs),
             len(sweep.runs) - len(todo))  # fmt: skip
    done = []
    started = time.monotonic()

    def one(run: Run, out: Path) -> tuple[Run, str, float]:
        start = time.monotonic()
        if is_done(sweep.results, run, resolve(run)):  # another sweep sharing the folder
            return run, DONE_ELSEWHERE, start
        log.info("%s ...", run.name)
        return run, _collect(run, runner(run, sweep.num_supernodes, out), sweep.results), start

    with (tempfile.TemporaryDirectory(prefix="fedpeft-sweep-") as tmp,
          ThreadPoolExecutor(max_workers=jobs) as pool):  # fmt: skip
        futures = [pool.submit(one, run, Path(tmp)) for run in todo]
        for i, future in enumerate(as_completed(futures), 1):
            run, status, start = future.result()
            now = time.monotonic()
            log.info("[%d/%d] %s: %s in %s; %s elapsed, ETA %s", i, len(todo), run.name, status,
                     duration(now - start), duration(now - started),
                     duration(eta(i, len(todo), now - started)))  # fmt: skip
            done.append((run, status))
    return done


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``fedpeft-sweep``)."""
    parser = argparse.ArgumentParser(prog="fedpeft-sweep", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", type=Path, help="sweep file, e.g. conf/sweep-cpu.toml")
    parser.add_argument("--report", action="store_true", help="only rebuild the report")
    parser.add_argument("--gpus-per-client", type=non_negative, default=0.0,
                        help="passed to each run's fedpeft-sim (default 0: no GPU)")  # fmt: skip
    parser.add_argument("--cpus-per-client", type=whole_cpus, default=1,
                        help="passed to each run's fedpeft-sim (default 1)")  # fmt: skip
    parser.add_argument("--in-process", action="store_true",
                        help="each run in one process, not on Ray")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1,
                        help="with --in-process: runs at once, each on its own CPUs")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="run only these of the file's seeds (reported: all)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.jobs != 1 and not args.in_process:
        parser.error(f"--jobs {args.jobs} needs --in-process (a simulation uses every CPU)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sweep = load_sweep(args.sweep)
    failed = []
    seeds = sorted({r.seed for r in sweep.runs})
    if args.seeds and not set(args.seeds) <= set(seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: {args.sweep} has seeds {seeds}")
    if not args.report:
        if args.in_process:
            try:
                runner: Callable[[Run, int, Path], Path] = InProcess(args.jobs)
            except ValueError as exc:
                parser.error(str(exc))
        else:
            runner = functools.partial(simulate, gpus_per_client=args.gpus_per_client,
                                       cpus_per_client=args.cpus_per_client)  # fmt: skip
        todo = sweep if not args.seeds else dataclasses.replace(
            sweep, runs=tuple(r for r in sweep.runs if r.seed in args.seeds))  # fmt: skip
        made = run_sweep(todo, runner, jobs=args.jobs)
        failed = [r.name for r, status in made if status not in ("completed", DONE_ELSEWHERE)]
    write_report(sweep, command=f"fedpeft-sweep {args.sweep}")
    if failed:
        log.error("runs that did not complete: %s", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
