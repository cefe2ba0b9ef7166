"""Mixed precision (``train.precision``): what the forward and backward passes compute in.

Trainable parameters, optimizer state and what travels stay fp32; only the
autocast region (the model's forward, hence its backward) runs in bf16 or fp16.
fp16 scales the loss (``torch.amp.GradScaler``) so small gradients do not flush to
zero (a fresh scaler each round, so a client's update does not depend on which worker
ran it before; its first steps may be skipped while it calibrates); bf16 has fp32's
exponent range and needs no scaler. ``auto`` picks bf16 where
the device computes it natively (CUDA with bf16 support, a CPU with AVX512-BF16 or
AMX), else fp16 on an older CUDA GPU, else fp32 (``docs/BENCHMARKS.md``, "Engine",
has this machine's measurements). DP-SGD computes per-sample gradients in fp32:
local DP turns ``auto`` into fp32 and refuses bf16/fp16 at start-up.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

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

    def scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled for fp16 only (a pass-through otherwise)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype is torch.float16)


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


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 matrix products natively."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
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


def resolve_precision(name: str, device: torch.device, private: bool = False) -> Precision:
    """The precision ``name`` means on ``device`` (``private``: DP-SGD, fp32 only)."""
    if private:
        return Precision("fp32", None, device.type)
    dtype = PRECISIONS.get(name, "train.precision")(device)
    resolved = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return Precision(resolved, dtype, device.type)
