"""``podman run`` commands rendered from the compose files, for hosts without Compose.

The compose stack (``docker-compose.yml`` and its overlays, rendered by
:mod:`fedpeft.tools.deploy.compose` from :mod:`fedpeft.tools.deploy.flags`) is merged with
Compose's override rules, and one service becomes one ``podman run`` argument list:
its command, entrypoint, volumes, secrets (read-only bind mounts at their targets),
environment and restart policy, unchanged. Every container shares one network
(``--network host``; the service names resolve to 127.0.0.1), which is how
``deploy/container-drill.sh`` runs the federation inside a loopback-only network
namespace. So the commands that run are the compose file's, not a second set.

``python -m fedpeft.tools.deploy.podman -f docker-compose.yml -f docker/with-state.yml ...
SERVICE --name NAME --image IMAGE`` prints the arguments after ``podman``, one per line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

# The service keys rendered; any other key is refused rather than dropped silently.
# `build` is replaced by the image given, `ports` by the host network, `depends_on`
# by the caller's start order.
RENDERED = {"command", "entrypoint", "volumes", "secrets", "environment", "restart"}
IGNORED = {"build", "ports", "depends_on"}
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ``${VAR}``, ``$VAR``, ``${VAR:-default}``, ``$$``.

    ``${VAR:-d}`` uses ``d`` when VAR is unset or empty, ``${VAR-d}`` only when unset.
    """

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(3)
        default = m.group(2)
        value = env.get(name)
        if default is not None:
            if value is None or (value == "" and ":-" in m.group(0)):
                return default
        return value or ""

    return _VAR.sub(sub, text)


def _target(entry: Any) -> str:
    if isinstance(entry, dict):
        return entry["target"]
    return entry.split(":")[1]


def merge_service(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Compose's override rules for the keys the compose files use.

    ``volumes`` and ``secrets`` merge by mount target, ``ports`` by value, ``build``,
    ``deploy`` and ``environment`` key by key; ``command``, ``entrypoint`` and scalars
    are replaced.
    """
    merged = dict(base)
    for key, value in over.items():
        if key in ("volumes", "secrets"):
            kept = {_target(v): v for v in merged.get(key, [])}
            kept.update({_target(v): v for v in value})
            merged[key] = list(kept.values())
        elif key == "ports":
            merged[key] = sorted(set(merged.get(key, [])) | set(value))
        elif key in ("build", "deploy", "environment") and isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def load_stack(root: Path, files: Sequence[str | Path]) -> dict[str, Any]:
    """The merged stack: ``{"services": {...}, "secrets": {...}}``, paths relative to ``root``."""
    stack: dict[str, Any] = {"services": {}, "secrets": {}}
    for rel in files:
        doc = yaml.safe_load((root / rel).read_text()) or {}
        for name, service in (doc.get("services") or {}).items():
            stack["services"][name] = merge_service(stack["services"].get(name, {}), service)
        stack["secrets"].update(doc.get("secrets") or {})
    return stack


def _host_path(root: Path, path: str) -> str:
    return str((root / path).resolve()) if path.startswith(".") else path


def run_args(
    stack: Mapping[str, Any],
    service: str,
    *,
    root: Path,
    name: str,
    image: str,
    env: Mapping[str, str] | None = None,
    secret_files: Mapping[str, str] | None = None,
    restart: bool = True,
    extra: Sequence[str] = (),
    replace: Mapping[str, str] | None = None,
) -> list[str]:
    """``podman`` arguments (``run -d ...``) that start ``service`` of ``stack``.

    ``secret_files`` replaces a secret's file (e.g. an unregistered key, to see it
    refused), ``restart=False`` drops the restart policy, ``extra`` goes before the
    image (e.g. ``--platform linux/arm64``), ``replace`` maps a command flag to a new
    value (``{"--port": "9099"}``: a second copy of a service on the same host network).
    Relative host paths are resolved
    against ``root``, as Compose does against the project directory.

    Raises
    ------
    KeyError
        For a service the stack lacks or a secret it does not declare.
    ValueError
        For a service key this renderer does not know (it drops nothing silently).

    """
    env = os.environ if env is None else env
    spec = stack["services"][service]
    unknown = set(spec) - RENDERED - IGNORED
    if unknown:
        raise ValueError(f"{service}: cannot render {sorted(unknown)} as podman options")
    args = ["run", "-d", "--name", name, "--network", "host"]
    for other in sorted(stack["services"]):  # every service is on this host's loopback
        args += ["--add-host", f"{other}:127.0.0.1"]
    if restart and spec.get("restart"):
        args += ["--restart", spec["restart"]]
    if "entrypoint" in spec:
        entry = spec["entrypoint"]
        args += ["--entrypoint", json.dumps(entry) if isinstance(entry, list) else entry]
    environment = spec.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    for key, value in environment.items():
        args += ["--env", f"{key}={interpolate(str(value), env)}"]
    for volume in spec.get("volumes", []):
        host, target, *mode = interpolate(volume, env).split(":")
        args += ["--volume", ":".join([_host_path(root, host), target, *mode])]
    files = dict(secret_files or {})
    for secret in spec.get("secrets", []):
        source = secret if isinstance(secret, str) else secret["source"]
        target = f"/run/secrets/{source}" if isinstance(secret, str) else secret["target"]
        path = files.get(source, stack["secrets"][source]["file"])
        args += ["--volume", f"{_host_path(root, path)}:{target}:ro"]
    args += [*extra, image]
    command = spec.get("command", [])
    if isinstance(command, str):
        raise ValueError(f"{service}: a string command; the compose files use lists")
    command = [interpolate(str(a), env) for a in command]
    for flag, value in (replace or {}).items():
        if flag not in command:
            raise KeyError(f"{service}: no {flag} in its command")
        command[command.index(flag) + 1] = value
    return args + command


def main(argv: list[str] | None = None) -> int:
    """Print the ``podman`` arguments of one service, one per line."""
    p = argparse.ArgumentParser(prog="python -m fedpeft.tools.deploy.podman",
                                description=__doc__.split("\n")[0])  # fmt: skip
    p.add_argument("service")
    p.add_argument("-f", "--file", action="append", required=True, dest="files",
                   help="compose file, in stacking order (repeat)")  # fmt: skip
    p.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="where the compose files are (default: the current directory)",
    )
    p.add_argument("--project-dir", type=Path, default=None,
                   help="what relative host paths (./certs, ./outputs, ...) are relative to "
                   "(default: --root), as `docker compose --project-directory`")  # fmt: skip
    p.add_argument("--name", required=True, help="container name")
    p.add_argument("--image", required=True)
    p.add_argument("--secret-file", action="append", default=[], metavar="SECRET=PATH",
                   help="use PATH as the secret's file")  # fmt: skip
    p.add_argument("--no-restart", action="store_true", help="drop the restart policy")
    p.add_argument("--extra", action="append", default=[], help="an option before the image")
    p.add_argument("--replace-flag", action="append", default=[], metavar="FLAG=VALUE",
                   help="the command's FLAG gets VALUE: --replace-flag=--port=9099")  # fmt: skip
    a = p.parse_args(argv)
    root = a.root.resolve()
    project = (a.project_dir or root).resolve()
    secret_files = dict(s.split("=", 1) for s in a.secret_file)
    args = run_args(load_stack(root, a.files), a.service, root=project, name=a.name,
                    image=a.image, secret_files=secret_files, restart=not a.no_restart,
                    extra=a.extra,
                    replace=dict(r.split("=", 1) for r in a.replace_flag))  # fmt: skip
    for arg in args:
        if "\n" in arg:
            raise ValueError(f"argument {arg!r} has a newline")
        sys.stdout.write(arg + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
