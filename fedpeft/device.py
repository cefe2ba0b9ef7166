"""Where a process computes: its torch device (``train.device``, ``server.device``) and threads.

``auto`` takes CUDA when torch sees a GPU, else Apple's ``mps`` where present, else the
CPU, and logs what it picked. Asking for a device the process does not have raises a
:class:`~fedpeft.config.ConfigError` naming the key: in deployment the check runs on
the device itself (a SuperNode's ClientApp), since the server may have no GPU.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from .config import ConfigError
from .config.server import check_device
from .deploy.cpus import host_cpus

log = logging.getLogger(__name__)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


@functools.lru_cache(maxsize=8)
def resolve_device(spec: str, key: str) -> torch.device:
    """The torch device ``spec`` names on this machine (``key`` is named in errors).

    Raises
    ------
    ConfigError
        If ``spec`` is malformed or names a device this process cannot use.

    """
    check_device(key, spec)
    if spec == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        elif _mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        log.info("%s=auto: computing on %s (%s)", key, device, name)
        return device
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key}={spec!r}: torch sees no CUDA device here (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda}); use {key}='auto' or 'cpu'"
            )
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}={spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
        return device
    if spec == "mps" and not _mps_available():
        raise ConfigError(f"{key}={spec!r}: torch has no MPS device here; use 'auto' or 'cpu'")
    return torch.device(spec)


def available_cpus() -> int:
    """CPUs this process may use: ``OMP_NUM_THREADS`` when set, else its CPU affinity."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(host_cpus())


def set_threads(num_threads: int) -> int:
    """Set torch's intra-op threads to ``num_threads`` (0: :func:`available_cpus`).

    Ray sets ``OMP_NUM_THREADS`` to a simulated client's CPUs; ``fedpeft-deploy`` gives
    each SuperNode its share of the host's cores, so several on one host do not
    oversubscribe them. Returns the number of threads in use.
    """
    wanted = num_threads or available_cpus()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
        log.info("torch uses %d CPU threads", wanted)
    return wanted


def release(device: torch.device) -> None:
    """Return cached allocator blocks after a client's work.

    Ray's fractional GPUs do not cap memory: clients sharing a GPU must each give back
    what they allocated, or the next one on that GPU runs out of memory.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
