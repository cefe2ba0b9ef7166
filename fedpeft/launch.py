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
Ray cluster instead of starting one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from fedpeft.overrides import merge_overrides, to_arg

log = logging.getLogger("fedpeft.launch")

CONNECTION = "fedpeft-local"
NETNS_ENV = "FEDPEFT_IN_NETNS"
PR_SET_CHILD_SUBREAPER = 36


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


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
           sys.executable, "-m", "fedpeft.launch", *argv]  # fmt: skip
    child = subprocess.Popen(cmd, env=env)
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    return child.wait()


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"flower-superlink not healthy on 127.0.0.1:{port} after {timeout}s")


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux), so :func:`kill_descendants` still finds them.

    Ray starts its processes in sessions of their own, and a killed ``flwr-simulation``
    orphans them; as a child subreaper they are re-parented to this process, not init.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: process groups only
        log.debug("no child subreaper on this platform")


def kill_descendants(grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, every process below this one (all started by this run)."""
    procs = psutil.Process().children(recursive=True)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)


def stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group led by ``proc`` (ours), then SIGKILL it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:  # children (simulation, Ray) may outlive the leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_simulation(
    app: Path,
    run_config: list[str],
    num_supernodes: int,
    cpus_per_client: float,
    timeout: float,
) -> tuple[int, str]:
    """Start a SuperLink, run the app, stop the SuperLink; return (run id, status)."""
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
    log.info("SuperLink pid %d on 127.0.0.1:%d (FLWR_HOME=%s)", proc.pid, port, home)
    try:
        _wait_healthy(port, proc)
        fed = f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_client:g}"
        run_cmd = [_bin("flwr"), "run", str(app), CONNECTION, "--stream",
                   "--federation-config", fed]  # fmt: skip
        merged = to_arg(merge_overrides(run_config))
        if merged:
            run_cmd += ["--run-config", merged]
        started = time.monotonic()
        output, code = _stream(run_cmd, env, app, timeout)
        match = re.search(r"Successfully started run (\d+)", output)
        if not match:
            return -1, f"not started (flwr run exit code {code})"
        run_id = int(match.group(1))
        status = _run_status(run_id, env, app)
        log.info("run %d: %s after %.0fs", run_id, status, time.monotonic() - started)
        return run_id, status
    finally:
        stop_group(proc)
        kill_descendants()  # Ray's own sessions and orphans adopted as subreaper
        if os.environ.get("FEDPEFT_KEEP_FLWR_HOME"):
            log.info("kept %s", home)
        else:
            shutil.rmtree(home, ignore_errors=True)


def _stream(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[str, int]:
    """Run ``cmd``, echoing its output live; return (output, exit code)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with subprocess.Popen(cmd, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:  # fmt: skip
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                lines.append(line)
                if time.monotonic() > deadline:
                    proc.kill()
                    lines.append(f"fedpeft-sim: timed out after {timeout}s\n")
                    break
        except BaseException:  # SIGTERM / Ctrl-C: don't wait for the stream to end
            proc.kill()
            raise
    return "".join(lines), proc.returncode


def _run_status(run_id: int, env: dict[str, str], app: Path) -> str:
    for _ in range(30):
        res = subprocess.run(
            [_bin("flwr"), "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"],
            env=env, cwd=app, capture_output=True, text=True,
        )  # fmt: skip
        try:
            runs = json.loads(res.stdout).get("runs", [])
            status = str(runs[0].get("status", "unknown"))
        except (ValueError, IndexError, AttributeError):
            status = "unknown"
        if status.startswith("finished"):
            return status
        time.sleep(1)
    return status


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``fedpeft-sim``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="fedpeft-sim", description=__doc__.split("\n")[0])
    parser.add_argument("--app", type=Path, default=Path.cwd(), help="Flower app directory")
    parser.add_argument(
        "--run-config",
        "-c",
        action="append",
        default=[],
        help="run-config overrides or a .toml preset (repeatable; merged key by key, later wins)",
    )
    parser.add_argument("--num-supernodes", type=int, default=10)
    parser.add_argument("--cpus-per-client", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--netns", choices=("auto", "always", "never"), default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C, so the SuperLink's process group is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if _want_netns(args.netns):
        log.info("running inside a loopback-only network namespace")
        return _reexec_in_netns(argv)
    _, status = run_simulation(
        args.app.resolve(), args.run_config, args.num_supernodes, args.cpus_per_client,
        args.timeout,
    )  # fmt: skip
    return 0 if status == "finished:completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
