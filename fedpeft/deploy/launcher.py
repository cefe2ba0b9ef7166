"""A SuperLink and N SuperNodes as separate local processes, driven through ``flwr``.

:class:`Federation` owns every process it starts (each in its own session, so
its whole tree can be stopped), records their PIDs in ``<workdir>/pids.json``,
and talks to the SuperLink only through the ``flwr`` CLI with its own
``FLWR_HOME``, exactly as a user on another machine would. Everything binds
127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import procs
from .flags import Tls, superlink_args, supernode_args
from .secrets import ensure_certs, ensure_node_key

log = logging.getLogger(__name__)

CONNECTION = "fedpeft-deploy"
HOST = "127.0.0.1"


@dataclass
class FederationSpec:
    """What to start: the app, where its state lives, TLS and authentication."""

    app: Path
    workdir: Path
    num_supernodes: int = 2
    node_configs: list[dict[str, object]] = field(default_factory=list)
    tls: bool = True
    auth: bool = True
    cert_dir: Path | None = None
    database: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every process

    def __post_init__(self) -> None:
        if self.num_supernodes < 1:
            raise ValueError(f"num_supernodes={self.num_supernodes}: must be >= 1")
        if self.auth and not self.tls:
            raise ValueError("SuperNode authentication needs TLS: drop --insecure or add --no-auth")
        if len(self.node_configs) > self.num_supernodes:
            raise ValueError(
                f"{len(self.node_configs)} node configs for {self.num_supernodes} SuperNodes"
            )

    def node_config(self, index: int) -> dict[str, object]:
        """SuperNode ``index``'s node-config; by default partition ``index`` of N."""
        if index < len(self.node_configs):
            return self.node_configs[index]
        return {"partition-id": index, "num-partitions": self.num_supernodes}


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
        self.cli_home = self.work / "cli-home"
        self.cli_home.mkdir(exist_ok=True)
        tls_line = f'root-certificates = "{self.tls.ca}"' if self.tls else "insecure = true"
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{HOST}:{self.port}"\n{tls_line}\n'
        )

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

    def _spawn(self, name: str, cmd: list[str], home: Path) -> subprocess.Popen:
        with (self.work / f"{name}.log").open("a") as out:
            proc = subprocess.Popen(cmd, env=self.env(home), cwd=self.spec.app, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        log.info("%s: pid %d (log %s)", name, proc.pid, self.work / f"{name}.log")
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
        self.superlink = self._spawn("superlink", self.superlink_cmd(), self.work / "superlink")
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
        """Start SuperNode ``index`` (0-based) with its node-config.

        With authentication it gets the key pair ``keys/<name>`` (made if absent),
        whose public key is registered first unless ``register`` is False.
        """
        name = name or f"supernode-{index + 1}"
        key = None
        if self.spec.auth:
            key, public = ensure_node_key(self.work / "keys", name)
            if register:
                self.register(public)
        cmd = self.supernode_cmd(index, key, procs.free_port(), max_retries)
        proc = self._spawn(name, cmd, self.work / name)
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

    # -- flwr CLI --------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run ``flwr ARGS`` against this federation."""
        return subprocess.run([procs.bin_path("flwr"), *args], env=self.env(self.cli_home),
                              cwd=self.spec.app, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    def register(self, public_key: Path) -> str:
        """``flwr supernode register``: allow the key's owner to join; returns the node id."""
        res = self.flwr("supernode", "register", str(public_key), CONNECTION, "--format", "json")
        match = re.search(r'"node-id":\s*"?(\d+)', res.stdout)
        if not match:
            raise RuntimeError(f"registering {public_key} failed: {res.stdout}{res.stderr}")
        return match.group(1)

    def nodes(self) -> list[dict]:
        """``flwr supernode ls``: the SuperNodes the SuperLink knows, with their status."""
        return procs.flwr_json(["supernode", "ls", CONNECTION], self.env(self.cli_home),
                               self.spec.app).get("nodes", [])  # fmt: skip

    def runs(self) -> list[dict]:
        """``flwr ls``: the runs the SuperLink knows."""
        data = procs.flwr_json(["ls", CONNECTION], self.env(self.cli_home), self.spec.app)
        return data.get("runs", [])

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
            if sum(n.get("status") == "online" for n in self.nodes()) >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"fewer than {count} SuperNodes online after {timeout}s")

    def start_run(self, run_config: list[str]) -> subprocess.Popen:
        """Submit the app with ``flwr run --stream`` (returns at once; see :meth:`finish_run`)."""
        cmd = [procs.bin_path("flwr"), "run", str(self.spec.app), CONNECTION, "--stream"]
        for item in run_config:
            cmd += ["--run-config", item]
        return subprocess.Popen(cmd, env=self.env(self.cli_home), cwd=self.spec.app, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip

    def finish_run(self, proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
        """Wait for a submitted run; return (run id or -1, final status, output)."""
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            output += f"\nfedpeft-deploy: flwr run timed out after {timeout}s\n"
        with (self.work / "runs.log").open("a") as f:
            f.write(output)
        match = re.search(r"Successfully started run (\d+)", output)
        if not match:
            return -1, f"not started (flwr run exit code {proc.returncode})", output
        run_id = int(match.group(1))
        status = procs.run_status(run_id, self.env(self.cli_home), self.spec.app, CONNECTION)
        return run_id, status, output

    def run(self, run_config: list[str], timeout: float = 3600.0) -> tuple[int, str, str]:
        """Submit the app and wait for its final status."""
        return self.finish_run(self.start_run(run_config), timeout)
