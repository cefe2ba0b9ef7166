"""The command lines of the SuperLink, SuperNodes and SuperExec: one source for all.

The process launcher (:mod:`fedpeft.tools.deploy.launcher`) and the compose files
(:mod:`fedpeft.tools.deploy.compose`) both build their commands here, so a flag
changed for one changes for the other; ``tests/test_deploy_compose.py`` checks
that the committed compose files are exactly what this module renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# File names inside a TLS directory, as written by deploy/certs.sh.
CA_CERT = "ca.crt"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
SUPERLINK_PORT = 8000  # Fleet, Control and Runtime APIs (one HTTP port in flwr 1.42)
SUPERNODE_PORT = 9094  # a SuperNode's Runtime API (its ClientApps connect here)


@dataclass(frozen=True)
class Tls:
    """Paths of the CA certificate and the SuperLink's certificate and key."""

    ca: str
    cert: str
    key: str

    @classmethod
    def in_dir(cls, directory: str) -> Tls:
        """The files ``deploy/certs.sh`` writes into ``directory``."""
        d = directory.rstrip("/")
        return cls(f"{d}/{CA_CERT}", f"{d}/{SERVER_CERT}", f"{d}/{SERVER_KEY}")


def format_node_config(config: Mapping[str, object]) -> str:
    """``{"partition-id": 0, "data-path": "/d"}`` → ``partition-id=0 data-path="/d"``.

    The same ``key=value`` syntax serves ``--run-config``.

    Raises
    ------
    ValueError
        For a key or value that ``flower-supernode --node-config`` cannot carry.

    """
    parts = []
    for key, value in config.items():
        if not key or any(c.isspace() or c in "='\"" for c in key):
            raise ValueError(f"node-config key {key!r}: no spaces, quotes or '=' allowed")
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, int | float):
            text = repr(value)
        elif isinstance(value, str) and '"' not in value:
            text = f'"{value}"'
        else:
            raise ValueError(f"node-config {key}={value!r}: expected int, float, bool or str")
        parts.append(f"{key}={text}")
    return " ".join(parts)


def superlink_args(
    *,
    host: str,
    port: int,
    database: str | None,
    tls: Tls | None,
    auth: bool,
    isolation: str = "subprocess",
) -> list[str]:
    """Arguments of ``flower-superlink`` (without the program name).

    ``tls=None`` is insecure mode; ``auth`` needs TLS (Flower refuses it otherwise).
    """
    if auth and tls is None:
        raise ValueError("SuperNode authentication (auth=True) needs TLS; pass tls")
    args = ["--host", host, "--port", str(port), "--isolation", isolation]
    if isolation == "subprocess":
        args.append("--disable-runtime-dependency-installation")
    if database:
        args += ["--database", database]
    if tls is None:
        args.append("--insecure")
    else:
        args += ["--ssl-ca-certfile", tls.ca, "--ssl-certfile", tls.cert,
                 "--ssl-keyfile", tls.key]  # fmt: skip
    if auth:
        args.append("--enable-supernode-auth")
    return args


def supernode_args(
    *,
    superlink: str,
    host: str,
    port: int,
    node_config: Mapping[str, object],
    root_ca: str | None,
    auth_key: str | None,
    max_retries: int | None = None,
) -> list[str]:
    """Arguments of ``flower-supernode``: ClientApps run in subprocesses of the SuperNode."""
    if auth_key and root_ca is None:
        raise ValueError("a SuperNode auth key needs TLS; pass root_ca")
    args = ["--superlink", superlink, "--host", host, "--port", str(port), "--isolation",
            "subprocess", "--node-config", format_node_config(node_config)]  # fmt: skip
    args += ["--insecure"] if root_ca is None else ["--root-certificates", root_ca]
    if auth_key:
        args += ["--auth-supernode-private-key", auth_key]
    if max_retries is not None:
        args += ["--max-retries", str(max_retries)]
    return args


def serverapp_superexec_args(*, runtime_api: str, root_ca: str | None) -> list[str]:
    """Arguments of ``flower-superexec`` running ServerApps for a ``--isolation process`` link."""
    args = ["--runtime-api-address", runtime_api]  # the task type comes from the API
    return args + (["--insecure"] if root_ca is None else ["--root-certificates", root_ca])
