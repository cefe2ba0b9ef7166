"""Run the app as a Ray simulation with a SuperLink this launcher owns.

``flwr run .`` on Flower's default ``local`` connection starts a detached
SuperLink that outlives the run. This launcher instead starts
``flower-superlink --simulation`` itself (isolated ``FLWR_HOME``, loopback
only, no runtime dependency installation), submits the app with
``flwr run --stream``, reports the run's final status, and stops the
SuperLink's whole process group (SuperExec, simulation, Ray) by PID.

As root it runs inside a network namespace that has only ``lo``, so Ray's
listeners cannot reach any other address (``--netns never`` to disable).
``RAY_ADDRESS`` in the environment attaches the simulation to an existing
Ray cluster instead of starting one. ``--gpus-per-client 0.25`` gives each
ClientApp a quarter of a GPU in Ray's bookkeeping: four run at once per GPU
(Ray does not cap their memory; docs/GPU.md). ``--cpus-per-client`` is a whole
number of CPUs, as Flower counts them; more clients than cores share a GPU through
``--gpus-per-client`` alone.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedpeft.config import ConfigError, app_config, merge_overrides, parse_run_config, to_arg
from fedpeft.tools.fab import stage_app

from ..precision import warn_if_emulated
from ..progress import RunConsole, add_verbose_argument, results_dir, setup_cli_logging
from ..run_folder import RUN_LOG
from .procs import become_subreaper, kill_descendants, run_status, stop_group, stream, wait_healthy
from .procs import bin_path as _bin
from .procs import free_port as _free_port

log = logging.getLogger("fedpeft.tools.launch")

CONNECTION = "fedpeft-local"
NETNS_ENV = "FEDPEFT_IN_NETNS"
LOG_FILE = RUN_LOG  # the run's whole output, in its run folder
# PYTHONWARNINGS entry (action:message prefix:category:module) for Ray's GPU-hiding tip
RAY_GPU_TIP_FILTER = "ignore:Tip:FutureWarning:ray._private.worker"


def _want_netns(mode: str) -> bool:
    if mode == "never" or os.environ.get(NETNS_ENV):
        return False
    can = os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip")
    if mode == "always" and not can:
        raise SystemExit("--netns always needs root, unshare and ip")
    return bool(can)


def _reexec_in_netns(argv: list[str]) -> int:
    env = dict(os.environ, **{NETNS_ENV: "1"})
    cmd = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, "-m", "fedpeft.tools.launch", *argv]  # fmt: skip
    child = subprocess.Popen(cmd, env=env)
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    return child.wait()


def non_negative(text: str) -> float:
    """``argparse`` type: a finite float >= 0 (``--gpus-per-client``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number >= 0")
    return value


def whole_cpus(text: str) -> int:
    """``argparse`` type: a whole number of CPUs >= 1 (``--cpus-per-client``).

    Flower's simulation config holds it as an unsigned integer: a fraction such as 0.5
    would stop the run before it starts.
    """
    value = non_negative(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a whole number of CPUs >= 1 (Flower counts whole CPUs per ClientApp;"
            " to run more clients than cores on a GPU, lower --gpus-per-client instead)"
        )
    return int(value)


def flower_gpu_fraction(gpus_per_client: float) -> float:
    """``gpus_per_client`` as Flower should be told it, so that it reads back no larger.

    Flower's simulation config stores the fraction as a 32-bit float and sizes its actor
    pool as ``int(GPUs / fraction)``: 0.2 is stored as 0.20000000298, and one GPU would
    then hold 4 clients, not 5 (0.1: 9, 1/3: 2). The nearest 32-bit float at or below the
    fraction reads back exactly and divides as intended; Ray counts resources in steps
    of 1e-4, where the two are the same.

    Raises
    ------
    ValueError
        If ``gpus_per_client`` is negative or not finite.

    """
    if not math.isfinite(gpus_per_client) or gpus_per_client < 0:
        raise ValueError(f"gpus_per_client={gpus_per_client!r}: must be a finite number >= 0")
    stored = np.float32(gpus_per_client)
    if float(stored) > gpus_per_client:
        stored = np.nextafter(stored, np.float32(0))
    return float(stored)


def federation_config(num_supernodes: int, cpus_per_client: int,
                      gpus_per_client: float = 0.0) -> str:  # fmt: skip
    """The ``flwr run --federation-config`` string of a simulation.

    ``client-resources-num-gpus`` is only passed when ``gpus_per_client`` > 0
    (Flower's default is 0: no GPU asked for), as :func:`flower_gpu_fraction`.

    Raises
    ------
    ValueError
        If ``gpus_per_client`` is negative or not finite, or ``cpus_per_client`` is not
        a whole number >= 1.

    """
    if isinstance(cpus_per_client, bool) or int(cpus_per_client) != cpus_per_client \
            or cpus_per_client < 1:  # fmt: skip
        raise ValueError(f"cpus_per_client={cpus_per_client!r}: must be a whole number >= 1")
    gpus = flower_gpu_fraction(gpus_per_client)
    fed = f"num-supernodes={num_supernodes} client-resources-num-cpus={int(cpus_per_client)}"
    if gpus > 0:
        fed += f" client-resources-num-gpus={gpus!r}"
    return fed


def run_simulation(
    app: Path,
    run_config: list[str],
    num_supernodes: int,
    cpus_per_client: int,
    timeout: float,
    gpus_per_client: float = 0.0,
    verbose: bool = False,
) -> tuple[int, str]:
    """Start a SuperLink, run the app, stop the SuperLink; return (run id, status).

    The run's output is shown through :class:`~fedpeft.progress.RunConsole` (every
    line with ``verbose``) and kept whole in ``run.log`` in the run folder.
    """
    become_subreaper()
    home = Path(tempfile.mkdtemp(prefix="fedpeft-flwr-"))
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_DISABLE_UPDATE_CHECK="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    # Ray's driver warns on every start that a future Ray will stop hiding GPUs from
    # actors that asked for none. This launcher relies on today's behaviour (a client
    # with --gpus-per-client 0 sees no GPU, so train.device=auto picks the CPU), so the
    # tip does not apply; only that warning is silenced.
    env["PYTHONWARNINGS"] = ",".join(
        w for w in (env.get("PYTHONWARNINGS"), RAY_GPU_TIP_FILTER) if w
    )
    superlink_log = home / "superlink.log"
    cmd = [
        _bin("flower-superlink"), "--insecure", "--simulation",
        "--disable-runtime-dependency-installation",
        "--host", "127.0.0.1", "--port", str(port),
        "--control-api-address", f"127.0.0.1:{_free_port()}",
        "--health-server-address", f"127.0.0.1:{_free_port()}",
    ]  # fmt: skip
    with superlink_log.open("w") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=app, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    log.debug("SuperLink pid %d on 127.0.0.1:%d (FLWR_HOME=%s)", proc.pid, port, home)
    try:
        wait_healthy(port, proc)
        fed = federation_config(num_supernodes, cpus_per_client, gpus_per_client)
        staged = stage_app(app, home / "app")  # the FAB's files, without walking .venv
        run_cmd = [_bin("flwr"), "run", str(staged), CONNECTION, "--stream",
                   "--federation-config", fed]  # fmt: skip
        merged = to_arg(merge_overrides(run_config))
        if merged:
            run_cmd += ["--run-config", merged]
        started = time.monotonic()
        with RunConsole(verbose) as console:
            output, code = stream(run_cmd, env, app, timeout, echo=console)
        _keep_log(output)
        match = re.search(r"Successfully started run (\d+)", output)
        if not match:
            return -1, f"not started (flwr run exit code {code})"
        run_id = int(match.group(1))
        status = run_status(run_id, env, app, CONNECTION)
        log.info("run %d: %s after %.0fs", run_id, status, time.monotonic() - started)
        return run_id, status
    finally:
        stop_group(proc)
        kill_descendants()  # Ray's own sessions and orphans adopted as subreaper
        if os.environ.get("FEDPEFT_KEEP_FLWR_HOME"):
            log.info("kept %s", home)
        else:
            shutil.rmtree(home, ignore_errors=True)


def _keep_log(output: str) -> None:
    """Write the run's whole output to ``run.log`` in its run folder (if it got one)."""
    run_dir = results_dir(output)
    if run_dir is None or not run_dir.is_dir():
        log.warning("the run made no run folder; its output is not kept")
        return
    (run_dir / LOG_FILE).write_text(output)
    log.info("full log: %s", run_dir / LOG_FILE)


def build_parser() -> argparse.ArgumentParser:
    """``fedpeft-sim``'s command line."""
    p = argparse.ArgumentParser(prog="fedpeft-sim", description=__doc__.split("\n")[0])
    p.add_argument("--app", type=Path, default=Path.cwd(), help="Flower app directory")
    p.add_argument(
        "--run-config",
        "-c",
        action="append",
        default=[],
        help="run-config overrides or a .toml preset (repeatable; merged key by key, later wins)",
    )
    p.add_argument("--num-supernodes", type=int, default=10)
    p.add_argument("--cpus-per-client", type=whole_cpus, default=1,
                   help="whole CPUs of each ClientApp for Ray's scheduling (default 1: one "
                        "Ray actor per CPU)")  # fmt: skip
    p.add_argument(
        "--gpus-per-client",
        type=non_negative,
        default=0.0,
        help="GPU share of each ClientApp for Ray's scheduling, e.g. 0.25: 4 clients per "
        "GPU (default 0: none; memory is not capped)",
    )
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--netns", choices=("auto", "always", "never"), default="auto")
    add_verbose_argument(p, RUN_LOG)
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``fedpeft-sim``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_cli_logging(args.verbose)
    # SIGTERM unwinds like Ctrl-C, so the SuperLink's process group is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if _want_netns(args.netns):
        log.debug("running inside a loopback-only network namespace")
        return _reexec_in_netns(argv)
    try:  # a bad key fails here, before a SuperLink and Ray start (the ServerApp checks too);
        # after the re-exec, so it runs once
        cfg = parse_run_config(app_config(args.app.resolve(), args.run_config))
    except ConfigError as err:
        log.error("invalid run config: %s", err)
        return 2
    if cfg.train.device == "cpu" or (cfg.train.device == "auto" and not args.gpus_per_client):
        # the clients compute on this machine's CPU (Ray hides GPUs from actors given none)
        warn_if_emulated(cfg.train.precision, torch.device("cpu"), "train.precision")
    _, status = run_simulation(
        args.app.resolve(), args.run_config, args.num_supernodes, args.cpus_per_client,
        args.timeout, args.gpus_per_client, verbose=args.verbose,
    )  # fmt: skip
    return 0 if status == "finished:completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
