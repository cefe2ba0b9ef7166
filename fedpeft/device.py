"""Where a process computes: its torch device (``train.device``, ``server.device``) and threads.

``auto`` takes CUDA when torch sees a GPU, else Apple's ``mps`` where present, else the
CPU, and logs what it picked; when a GPU was assigned to the process
(``CUDA_VISIBLE_DEVICES``, as Ray sets it for ``--gpus-per-client``) but torch cannot use
it, ``auto`` warns with torch's reason before it falls back to the CPU. Asking for a
device the process does not have raises a :class:`~fedpeft.config.ConfigError` naming
the key: in deployment the check runs on the device itself (a SuperNode's ClientApp),
since the server may have no GPU. A CUDA device becomes the process's current device,
and its fp32 matrix products and convolutions use TF32 (:func:`use_cuda`).
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from .config import ConfigError
from .config.server import check_device
from .host import host_cpus

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
            device = use_cuda(torch.device("cuda", torch.cuda.current_device()))
        else:
            assigned = assigned_gpus()
            if assigned:
                log.warning(
                    "%s=auto: GPU(s) %s were assigned to this process (CUDA_VISIBLE_DEVICES) "
                    "but torch cannot use them (%s); computing on the CPU",
                    key, assigned, cuda_unavailable_reason(),
                )  # fmt: skip
            device = torch.device("mps") if _mps_available() else torch.device("cpu")
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        log.info("%s=auto: computing on %s (%s)", key, device, name)
        return device
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key}={spec!r}: torch cannot use a CUDA device here "
                f"({cuda_unavailable_reason()}); use {key}='auto' or 'cpu'"
            )
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}={spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
        return use_cuda(device)
    if spec == "mps" and not _mps_available():
        raise ConfigError(f"{key}={spec!r}: torch has no MPS device here; use 'auto' or 'cpu'")
    return torch.device(spec)


def use_cuda(device: torch.device) -> torch.device:
    """Make ``device`` this process's current CUDA device and let fp32 use TF32 there.

    Current: kernels and allocations that name no index (autocast's, the caching
    allocator's, ``torch.cuda.*`` calls) then land on ``cuda:N`` too. TF32: fp32 matrix
    products (fp32 runs, DP-SGD) use the tensor cores of Ampere and newer GPUs, with
    fp32's range and a 10-bit mantissa, as autocast's bf16 does with 7; the trainable
    state, the optimizer and the updates stay fp32.
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    torch.cuda.set_device(index)
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9's API
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:  # older torch; the two APIs must not be mixed
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda", index)


def assigned_gpus() -> str:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` gives this process ('' when none or hidden)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return "" if visible in ("", "-1", "NoDevFiles") else visible


def cuda_unavailable_reason() -> str:
    """Why torch cannot use CUDA, in torch's words where it has any."""
    if torch.version.cuda is None and not torch.version.hip:
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as err:  # torch's own reason: driver too old, no device, ...
        return f"torch {torch.__version__}, CUDA build {torch.version.cuda}: {err}"
    return f"torch {torch.__version__}, CUDA build {torch.version.cuda}: no device found"


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
