"""Where and how one process computes: device, precision and the batch pipeline.

Built per message from the run config (cheap: the device is resolved once per
process and the cached model is moved to it once).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backbones import normalization
from .data.batches import BatchPipeline
from .device import resolve_device
from .precision import Precision, resolve_precision


@dataclass(frozen=True)
class Engine:
    """The device, the autocast precision and the uint8 → input pipeline of one model."""

    device: torch.device
    precision: Precision
    pipeline: BatchPipeline


def input_size(model: nn.Module) -> int:
    """The square input resolution of a timm ViT."""
    size = model.patch_embed.img_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def make_engine(
    model: nn.Module,
    device: str = "cpu",
    precision: str = "fp32",
    augment: str = "none",
    *,
    device_key: str = "train.device",
    private: bool = False,
) -> Engine:
    """Resolve ``device`` (``device_key`` in errors), move ``model`` there, pick the precision.

    ``private``: DP-SGD, whose per-sample gradients stay fp32 (:mod:`fedpeft.precision`).
    The precision's key is named as the device's namespace's (``server.precision``).
    """
    where = resolve_device(device, device_key)
    model.to(where)
    mean, std = normalization(model)
    precision_key = f"{device_key.rpartition('.')[0]}.precision"
    return Engine(
        where,
        resolve_precision(precision, where, private, key=precision_key),
        BatchPipeline(input_size(model), mean, std, where, augment),
    )
