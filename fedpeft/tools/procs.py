"""Process helpers shared by the launchers: ports, binaries, health, status, shutdown.

Everything listens on and talks to 127.0.0.1 only. Processes are stopped by
PID or by the process group of a process this code started; the process tree
is read from ``/proc`` (Linux) so that children that start their own session
(Flower's SuperExec does) are stopped too.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bin_path(name: str) -> str:
    """``name`` from this interpreter's environment if present, else from ``PATH``."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def wait_healthy(
    port: int,
    proc: subprocess.Popen,
    timeout: float = 60.0,
    ca_file: Path | None = None,
    what: str = "flower-superlink",
) -> None:
    """Poll ``http(s)://127.0.0.1:port/health`` until it answers 200.

    Raises
    ------
    RuntimeError
        If ``proc`` exits or the endpoint is not healthy within ``timeout``.

    """
    scheme = "https" if ca_file else "http"
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            url = f"{scheme}://127.0.0.1:{port}/health"
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{what} not healthy on 127.0.0.1:{port} after {timeout}s")


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[1])


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    return _ppid(pid) is not None


def descendants(roots: Iterable[int]) -> set[int]:
    """All live descendants of ``roots`` (from ``/proc``), roots excluded."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def tagged(var: str, prefix: str) -> set[int]:
    """Live processes (not this one) whose environment has ``var`` starting with ``prefix``.

    Children inherit the environment, so this finds the processes started under a
    tag (e.g. ``FLWR_HOME`` inside a work directory) even after they were reparented.
    """
    found = set()
    needle = f"{var}={prefix}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(needle) for item in environ.split(b"\0")) and alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def _signal_tree(pids: set[int], sig: int) -> None:
    for pid in pids:
        for kill in (os.killpg, os.kill):  # its group if it leads one, else itself
            try:
                kill(pid, sig)
                break
            except (ProcessLookupError, PermissionError):
                continue


def stop_tree(procs: list[subprocess.Popen], grace: float = 15.0) -> set[int]:
    """SIGTERM ``procs`` (ours) and their whole process trees, then SIGKILL what is left.

    Returns every PID that was signalled, so callers can check none survived.
    """
    roots = {p.pid for p in procs}
    seen = roots | descendants(roots)
    _signal_tree({p.pid for p in procs if p.poll() is None}, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for _ in range(3):  # children started meanwhile, or reparented ones still alive
        seen |= descendants(seen)
        survivors = {pid for pid in seen if alive(pid)}
        if not survivors:
            break
        _signal_tree(survivors, signal.SIGKILL)
        time.sleep(0.2)
    for proc in procs:
        proc.wait()
    return seen


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux), so :func:`kill_descendants` still finds them.

    Ray starts processes in sessions of their own, and a killed ``flwr-simulation``
    orphans them; with this they are re-parented to this process instead of init.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: process groups only
        log.debug("no child subreaper on this platform")


def kill_descendants(grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, every process below this one (all started by it); reap them."""
    pids = descendants({os.getpid()})
    _signal_tree(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal_tree({p for p in pids if alive(p)}, signal.SIGKILL)
    while True:  # adopted children that died are our zombies now
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


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


def stream(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float,
    echo: Callable[[str], None] | None = None,
) -> tuple[str, int]:  # fmt: skip
    """Run ``cmd``, handing each output line to ``echo`` live; return (output, exit code)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with subprocess.Popen(cmd, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:  # fmt: skip
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if echo is not None:
                    echo(line)
                lines.append(line)
                if time.monotonic() > deadline:
                    proc.kill()
                    lines.append(f"timed out after {timeout}s\n")
                    break
        except BaseException:  # SIGTERM / Ctrl-C: don't wait for the stream to end
            proc.kill()
            raise
    return "".join(lines), proc.returncode


def flwr_json(args: list[str], env: dict[str, str], cwd: Path) -> dict:
    """Run ``flwr ARGS --format json``; the parsed JSON, or ``{}`` if unparsable."""
    res = subprocess.run([bin_path("flwr"), *args, "--format", "json"], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    try:
        data = json.loads(res.stdout)
    except ValueError:
        log.debug("flwr %s: %s", " ".join(args), (res.stdout + res.stderr)[-500:])
        return {}
    return data if isinstance(data, dict) else {}


def run_status(
    run_id: int, env: dict[str, str], app: Path, connection: str, wait: float = 30.0
) -> str:
    """The run's status from ``flwr ls`` (e.g. ``finished:completed``), waiting for a final one."""
    status = "unknown"
    deadline = time.monotonic() + wait
    while True:
        runs = flwr_json(["ls", connection, "--run-id", str(run_id)], env, app).get("runs", [])
        status = str(runs[0].get("status", "unknown")) if runs else "unknown"
        if status.startswith("finished") or time.monotonic() > deadline:
            return status
        time.sleep(1)
