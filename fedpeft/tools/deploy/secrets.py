"""TLS certificates and SuperNode key pairs, made by the scripts shipped in this package.

The scripts live in ``fedpeft/tools/deploy/scripts/`` (package data, so they are in the
wheel too) and are found through :mod:`importlib.resources`, not through the
checkout. ``deploy/certs.sh`` and ``deploy/node-keys.sh`` in a checkout exec them;
where fedpeft is only installed, run them with::

    python -m fedpeft.tools.deploy.secrets certs OUT_DIR NAME [NAME...]
    python -m fedpeft.tools.deploy.secrets node-keys OUT_DIR NAME [NAME...]
"""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib import resources
from pathlib import Path

from .flags import CA_CERT, SERVER_CERT, SERVER_KEY, Tls

log = logging.getLogger(__name__)

SCRIPTS = ("certs.sh", "node-keys.sh")


def _run(name: str, args: list[str], capture: bool) -> subprocess.CompletedProcess:
    resource = resources.files("fedpeft.tools.deploy") / "scripts" / name
    if not resource.is_file():
        raise FileNotFoundError(f"{resource}: not found (fedpeft installed without its scripts?)")
    with resources.as_file(resource) as script:  # a real file even if the package is zipped
        return subprocess.run(["bash", str(script), *args], capture_output=capture, text=True)


def _script(name: str, *args: str) -> None:
    res = _run(name, list(args), capture=True)
    if res.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed: {res.stderr.strip()}")
    log.info("%s", res.stdout.strip())


def ensure_certs(directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Tls:
    """CA + server certificate in ``directory`` (made with ``certs.sh`` if absent).

    Raises
    ------
    FileNotFoundError
        If ``directory`` holds some but not all of the three files.

    """
    files = [directory / n for n in (CA_CERT, SERVER_CERT, SERVER_KEY)]
    present = [f.is_file() for f in files]
    if not any(present):
        _script("certs.sh", str(directory), *names)
    elif not all(present):
        missing = [str(f) for f, ok in zip(files, present, strict=True) if not ok]
        raise FileNotFoundError(f"TLS directory {directory}: missing {missing}")
    return Tls.in_dir(str(directory))


def ensure_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """(private, public) SuperNode key files, made with ``node-keys.sh`` if absent."""
    private, public = directory / name, directory / f"{name}.pub"
    if not private.is_file():
        _script("node-keys.sh", str(directory), name)
    if not public.is_file():
        raise FileNotFoundError(f"{public}: public key missing next to {private}")
    return private, public


def main(argv: list[str] | None = None) -> int:
    """``python -m fedpeft.tools.deploy.secrets {certs,node-keys} ARGS...``: run a script."""
    argv = sys.argv[1:] if argv is None else argv
    commands = [s.removesuffix(".sh") for s in SCRIPTS]
    if not argv or argv[0] not in commands:
        sys.stderr.write(f"usage: python -m fedpeft.tools.deploy.secrets {{{','.join(commands)}}} "
                         "OUT_DIR NAME [NAME...]\n")  # fmt: skip
        return 2
    return _run(f"{argv[0]}.sh", argv[1:], capture=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
