"""TLS certificates and SuperNode key pairs, made by the scripts in ``deploy/``."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from .flags import CA_CERT, SERVER_CERT, SERVER_KEY, Tls

log = logging.getLogger(__name__)

SCRIPTS = Path(__file__).resolve().parents[2] / "deploy"


def _script(name: str, *args: str) -> None:
    script = SCRIPTS / name
    if not script.is_file():
        raise FileNotFoundError(f"{script}: not found (run from a checkout of the project)")
    res = subprocess.run(["bash", str(script), *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed: {res.stderr.strip()}")
    log.info("%s", res.stdout.strip())


def ensure_certs(directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Tls:
    """CA + server certificate in ``directory`` (made with ``deploy/certs.sh`` if absent).

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
    """(private, public) SuperNode key files, made with ``deploy/node-keys.sh`` if absent."""
    private, public = directory / name, directory / f"{name}.pub"
    if not private.is_file():
        _script("node-keys.sh", str(directory), name)
    if not public.is_file():
        raise FileNotFoundError(f"{public}: public key missing next to {private}")
    return private, public
