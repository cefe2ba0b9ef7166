"""The ``flwr`` CLI against one SuperLink, with its own ``FLWR_HOME`` (as an operator's).

Registers SuperNode keys, lists nodes and runs, and submits the app with
``flwr run --stream``, exactly as a user on another machine would.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from ...config import merge_overrides, to_arg
from .. import procs
from ..fab import stage_app

CONNECTION = "fedpeft-deploy"


class FlwrCli:
    """``flwr`` with a ``config.toml`` holding one connection to ``address``."""

    def __init__(self, app: Path, home: Path, address: str, ca: str | None,
                 env: Callable[[Path], dict[str, str]]) -> None:  # fmt: skip
        self.app, self.home, self._env = app, home, env
        home.mkdir(parents=True, exist_ok=True)
        tls_line = f'root-certificates = "{ca}"' if ca else "insecure = true"
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{address}"\n{tls_line}\n'
        )

    def env(self) -> dict[str, str]:
        """The environment every ``flwr`` call gets."""
        return self._env(self.home)

    def call(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run ``flwr ARGS``."""
        return subprocess.run([procs.bin_path("flwr"), *args], env=self.env(), cwd=self.app,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def register(self, public_key: Path) -> str:
        """``flwr supernode register``: allow the key's owner to join; returns the node id."""
        res = self.call("supernode", "register", str(public_key), CONNECTION, "--format", "json")
        match = re.search(r'"node-id":\s*"?(\d+)', res.stdout)
        if not match:
            raise RuntimeError(f"registering {public_key} failed: {res.stdout}{res.stderr}")
        return match.group(1)

    def nodes(self) -> list[dict]:
        """``flwr supernode ls``: the SuperNodes the SuperLink knows, with their status."""
        return procs.flwr_json(["supernode", "ls", CONNECTION], self.env(),
                               self.app).get("nodes", [])  # fmt: skip

    def runs(self) -> list[dict]:
        """``flwr ls``: the runs the SuperLink knows."""
        data = procs.flwr_json(["ls", CONNECTION], self.env(), self.app)
        return data.get("runs", [])

    def start_run(self, run_config: list[str]) -> subprocess.Popen:
        """Submit the app with ``flwr run --stream`` (returns at once; see :meth:`finish_run`).

        Several ``key=value`` strings are merged key by key into one ``--run-config``:
        flwr 1.42 applies repeated ``--run-config`` options table by table, so a later
        ``server.x=1`` would drop every ``server.*`` key of an earlier one.
        """
        staged = stage_app(self.app, self.home / "app")  # what the FAB holds, quickly
        cmd = [procs.bin_path("flwr"), "run", str(staged), CONNECTION, "--stream"]
        merged = to_arg(merge_overrides(run_config))
        if merged:
            cmd += ["--run-config", merged]
        return subprocess.Popen(cmd, env=self.env(), cwd=self.app, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip

    def finish_run(
        self, proc: subprocess.Popen, timeout: float, echo: Callable[[str], None] | None = None,
        log: Path | None = None,
    ) -> tuple[int, str, str]:  # fmt: skip
        """Wait for a submitted run; return (run id or -1, final status, output).

        Each output line goes to ``echo`` as it arrives (e.g. a
        :class:`~fedpeft.progress.RunConsole`) and the whole output to ``log``.
        """
        lines: list[str] = []
        watchdog = threading.Timer(timeout, proc.kill)  # also ends a silent, hung flwr run
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if echo is not None:
                    echo(line)
            proc.wait()
        finally:
            watchdog.cancel()
        if proc.returncode == -signal.SIGKILL:
            lines.append(f"fedpeft-deploy: flwr run killed after {timeout}s\n")
        output = "".join(lines)
        if log is not None:
            with log.open("a") as f:
                f.write(output)
        match = re.search(r"Successfully started run (\d+)", output)
        if not match:
            return -1, f"not started (flwr run exit code {proc.returncode})", output
        run_id = int(match.group(1))
        status = procs.run_status(run_id, self.env(), self.app, CONNECTION)
        return run_id, status, output
