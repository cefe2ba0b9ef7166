"""A SuperLink and N SuperNodes as separate local processes, driven through ``flwr``.

:class:`Federation` owns every process it starts (each in its own session, so
its whole tree can be stopped), records their PIDs in ``<workdir>/pids.json``,
and talks to the SuperLink only through the ``flwr`` CLI with its own
``FLWR_HOME``, exactly as a user on another machine would. Everything binds
127.0.0.1. The SuperNodes divide the host's cores among themselves
(:mod:`fedpeft.tools.deploy.cpus`) unless ``FederationSpec.cpu_split`` is off.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .. import procs
from .cpus import format_cpus, host_cpus, pin, split_cpus, thread_env
from .flags import Tls, superlink_args, supernode_args
from .flwr_cli import FlwrCli
from .secrets import ensure_certs, ensure_node_key
from .spec import FederationSpec

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class Federation:
    """Start, drive and stop one local deployment (use as a context manager)."""

    def __init__(self, spec: FederationSpec) -> None:
        self.spec = spec
        self.work = spec.workdir.resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = procs.free_port()
        self.database = (spec.database or self.work / "state" / "superlink.db").resolve()
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self.tls: Tls | None = None
        if spec.tls:
            self.tls = ensure_certs((spec.cert_dir or self.work / "certs").resolve())
        self.superlink: subprocess.Popen | None = None
        self.supernodes: dict[str, subprocess.Popen] = {}
        self.signalled: set[int] = set()
        self.cpu_sets = split_cpus(host_cpus(), spec.num_supernodes) if spec.cpu_split else None
        self.cli = FlwrCli(spec.app, self.work / "cli-home", f"{HOST}:{self.port}",
                           self.tls.ca if self.tls else None, self.env)  # fmt: skip

    # -- processes -------------------------------------------------------------------
    def env(self, home: Path) -> dict[str, str]:
        """Environment for a Flower process with its own ``FLWR_HOME``."""
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, FLWR_HOME=str(home), FLWR_DISABLE_UPDATE_CHECK="1")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        env.setdefault("FEDPEFT_DATA_CACHE", "1")  # one process per message: keep data on disk
        env.update(self.spec.env)
        return env

    def supernode_cpus(self, index: int) -> frozenset[int] | None:
        """The CPUs SuperNode ``index`` runs on; None (all of them) without the split.

        An index past ``num_supernodes`` (a SuperNode started later) shares, round-robin.
        """
        return None if self.cpu_sets is None else self.cpu_sets[index % len(self.cpu_sets)]

    def supernode_env(self, index: int, home: Path) -> dict[str, str]:
        """:meth:`env`, plus the thread counts of SuperNode ``index``'s CPUs.

        ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are its share's size (an
        ``env`` entry of the spec still wins), so its ClientApps' torch uses that many.
        """
        env = self.env(home)
        cpus = self.supernode_cpus(index)
        if cpus is not None:
            env.update(thread_env(cpus))
            env.update(self.spec.env)
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str],
               cpus: frozenset[int] | None = None) -> subprocess.Popen:  # fmt: skip
        with (self.work / f"{name}.log").open("a") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=self.spec.app, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        where = ""
        if cpus is not None:
            pin(proc.pid, cpus)  # before it starts any ClientApp, which inherit it
            where = f", CPUs {format_cpus(cpus)}, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS')}"
        log.debug("%s: pid %d (log %s%s)", name, proc.pid, self.work / f"{name}.log", where)
        return proc

    def _write_pids(self) -> None:
        live = {n: p.pid for n, p in self.supernodes.items() if p.poll() is None}
        if self.superlink is not None and self.superlink.poll() is None:
            live["superlink"] = self.superlink.pid
        (self.work / "pids.json").write_text(json.dumps(live, indent=2))

    def superlink_cmd(self) -> list[str]:
        """The ``flower-superlink`` command line (same port and database on every restart)."""
        args = superlink_args(host=HOST, port=self.port, database=str(self.database),
                              tls=self.tls, auth=self.spec.auth)  # fmt: skip
        return [procs.bin_path("flower-superlink"), *args]

    def supernode_cmd(self, index: int, key: Path | None, port: int,
                      max_retries: int | None = None) -> list[str]:  # fmt: skip
        """The ``flower-supernode`` command line of SuperNode ``index`` (0-based)."""
        args = supernode_args(
            superlink=f"{HOST}:{self.port}", host=HOST, port=port,
            node_config=self.spec.node_config(index), root_ca=self.tls.ca if self.tls else None,
            auth_key=str(key) if key else None, max_retries=max_retries,
        )  # fmt: skip
        return [procs.bin_path("flower-supernode"), *args]

    def start_superlink(self) -> None:
        """Start ``flower-superlink`` and wait until it is healthy."""
        self.superlink = self._spawn("superlink", self.superlink_cmd(),
                                     self.env(self.work / "superlink"))  # fmt: skip
        self._write_pids()
        ca = Path(self.tls.ca) if self.tls else None
        procs.wait_healthy(self.port, self.superlink, ca_file=ca)

    def stop_superlink(self) -> None:
        """Stop the SuperLink and its process tree (SuperExec, ServerApp)."""
        if self.superlink is not None:
            self.signalled |= procs.stop_tree([self.superlink])
            self.superlink = None
            self._write_pids()

    def start_supernode(
        self, index: int, name: str | None = None, register: bool = True,
        max_retries: int | None = None,
    ) -> subprocess.Popen:  # fmt: skip
        """Start SuperNode ``index`` (0-based) with its node-config, on its share of the CPUs.

        With authentication it gets the key pair ``keys/<name>`` (made if absent),
        whose public key is registered first unless ``register`` is False.
        """
        name = name or f"supernode-{index + 1}"
        key = None
        if self.spec.auth:
            key, public = ensure_node_key(self.work / "keys", name)
            if register:
                self.cli.register(public)
        cmd = self.supernode_cmd(index, key, procs.free_port(), max_retries)
        proc = self._spawn(name, cmd, self.supernode_env(index, self.work / name),
                           self.supernode_cpus(index))  # fmt: skip
        self.supernodes[name] = proc
        self._write_pids()
        return proc

    def kill_supernode(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to SuperNode ``index``'s whole process group (a device dying)."""
        proc = self.supernodes[f"supernode-{index + 1}"]
        self.signalled |= {proc.pid} | procs.descendants([proc.pid])
        os.killpg(proc.pid, sig)
        proc.wait()
        self._write_pids()

    def leftovers(self) -> set[int]:
        """Live processes started under this work dir (by their ``FLWR_HOME``)."""
        return procs.tagged("FLWR_HOME", str(self.work))

    def stop(self) -> set[int]:
        """Stop every process this federation started; return all PIDs signalled.

        Process trees first (SIGTERM, then SIGKILL); then anything still carrying this
        work dir's ``FLWR_HOME`` (children whose parent died first) gets SIGKILL.
        """
        self.signalled |= procs.stop_tree(list(self.supernodes.values()))
        self.stop_superlink()
        for pid in self.leftovers():
            log.warning("killing leftover pid %d", pid)
            self.signalled.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._write_pids()
        return self.signalled

    def start(self) -> Federation:
        """SuperLink, key registration, N SuperNodes; wait until all are online."""
        self.start_superlink()
        for i in range(self.spec.num_supernodes):
            self.start_supernode(i)
        self.wait_online(self.spec.num_supernodes)
        return self

    def __enter__(self) -> Federation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_online(self, count: int, timeout: float = 120.0) -> None:
        """Wait until ``count`` SuperNodes are online.

        Raises
        ------
        RuntimeError
            If a SuperNode exits or ``count`` are not online within ``timeout``.

        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.supernodes.items() if p.poll() is not None]
            if len(self.supernodes) - len(dead) < count:
                raise RuntimeError(f"{dead} exited; see their logs in {self.work}")
            if sum(n.get("status") == "online" for n in self.cli.nodes()) >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"fewer than {count} SuperNodes online after {timeout}s")

    def run(
        self, run_config: list[str], timeout: float = 3600.0,
        echo: Callable[[str], None] | None = None,
    ) -> tuple[int, str, str]:  # fmt: skip
        """Submit the app with ``flwr run`` and wait for its final status.

        The output goes to ``echo`` line by line and to ``runs.log`` in the work dir.
        """
        run = self.cli.start_run(run_config)
        return self.cli.finish_run(run, timeout, echo, log=self.work / "runs.log")
