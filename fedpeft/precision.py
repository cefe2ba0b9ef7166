"""Mixed precision (``train.precision``, ``server.precision``): what the model computes in.

Trainable parameters, optimizer state and what travels stay fp32; only the
autocast region (the model's forward, hence its backward) runs in bf16 or fp16.
fp16 scales the loss (``torch.amp.GradScaler``) so small gradients do not flush to
zero; a client keeps the scale its round ended at in its ``Context.state`` for its next
round (:func:`kept_scaler`), so it does not skip its first steps again each round while a
fresh scaler calibrates, and its update still does not depend on which worker ran it.
bf16 has fp32's exponent range and needs no scaler. ``auto`` picks bf16 where the device
computes it natively (a CUDA GPU of compute capability 8.0 or newer, a CPU with
AVX512-BF16 or AMX), else fp16 on an older CUDA GPU (T4, V100), else fp32.
``bf16`` named on a CPU without native bf16 runs emulated, many times slower than
fp32 (``docs/BENCHMARKS.md``, "Engine"): that is logged as a warning. DP-SGD computes
per-sample gradients in fp32: local DP turns ``auto`` into fp32 and refuses bf16/fp16
at start-up.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from flwr.app import MetricRecord, RecordDict

from .registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (``None``: plain fp32) on one device type."""

    name: str
    dtype: torch.dtype | None
    device_type: str

    def autocast(self) -> contextlib.AbstractContextManager:
        """The region the forward pass runs in (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self, init_scale: float = 2.0**16) -> torch.amp.GradScaler:
        """A loss scaler, enabled for fp16 only (a pass-through otherwise)."""
        return torch.amp.GradScaler(
            self.device_type, init_scale=init_scale, enabled=self.dtype is torch.float16
        )


LOSS_SCALE = "loss-scale"  # Context.state record: fp16's loss scale at the end of a round


def kept_scaler(precision: Precision, state: RecordDict) -> torch.amp.GradScaler:
    """The loss scaler of a client's round: from the scale its last round ended at, if any."""
    kept = state.get(LOSS_SCALE)
    scale = kept.get("scale") if isinstance(kept, MetricRecord) else None
    if isinstance(scale, float) and 0 < scale < float("inf"):
        return precision.scaler(scale)
    return precision.scaler()


def keep_scale(scaler: torch.amp.GradScaler, state: RecordDict) -> None:
    """Keep an enabled ``scaler``'s current scale in ``state`` for the client's next round."""
    if scaler.is_enabled():
        state[LOSS_SCALE] = MetricRecord({"scale": float(scaler.get_scale())})


Resolver = Callable[[torch.device], torch.dtype | None]
PRECISIONS: Registry[Resolver] = Registry("precision")


@PRECISIONS.register("fp32")
def _fp32(device: torch.device) -> torch.dtype | None:
    return None


@PRECISIONS.register("bf16")
def _bf16(device: torch.device) -> torch.dtype | None:
    return torch.bfloat16


@PRECISIONS.register("fp16")
def _fp16(device: torch.device) -> torch.dtype | None:
    return torch.float16


# Evaluation and training, docs/BENCHMARKS.md "Engine".
EMULATED_BF16_SLOWDOWN = "27-38x slower than fp32 on a 2-core AMD EPYC with AVX2"


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 matrix products natively.

    On CUDA, a GPU of compute capability 8.0 (Ampere) or newer: torch's own
    ``is_bf16_supported()`` also answers yes for older GPUs that only emulate bf16, and
    asks the current GPU rather than ``device``.
    """
    if device.type == "cuda":
        if torch.version.hip:  # ROCm: torch knows which gfx architectures compute bf16
            with torch.cuda.device(device):
                return torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    return False


@PRECISIONS.register("auto")
def _auto(device: torch.device) -> torch.dtype | None:
    if native_bf16(device):
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return None


def warn_if_emulated(name: str, device: torch.device, key: str) -> bool:
    """Warn (once per process and key) when ``name`` is ``bf16`` that ``device`` only emulates.

    Returns whether it does.
    """
    if name != "bf16" or device.type != "cpu" or native_bf16(device):
        return False
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "%s='bf16' on a CPU without native bf16 (no AVX512-BF16 or AMX): autocast is "
            "emulated (%s); use %s='auto' or 'fp32'",
            key, EMULATED_BF16_SLOWDOWN, key,
        )  # fmt: skip
    return True


_warned: set[str] = set()


def resolve_precision(
    name: str, device: torch.device, private: bool = False, key: str = "train.precision"
) -> Precision:
    """The precision ``name`` means on ``device`` (``private``: DP-SGD, fp32 only).

    ``key`` is named in errors and in the warning for emulated bf16.
    """
    if private:
        return Precision("fp32", None, device.type)
    dtype = PRECISIONS.get(name, key)(device)
    warn_if_emulated(name, device, key)
    resolved = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return Precision(resolved, dtype, device.type)
