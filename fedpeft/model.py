"""The seeded model (backbone + PEFT method), built once per process."""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from peft_strategies import count_trainable, get_method
from peft_strategies.base import ViTDims

from .backbones import create_backbone
from .config import ModelConfig, PeftConfig
from .sharing import remember_initial, sharing_of

log = logging.getLogger(__name__)

# Number of models built in this process; the simulation tests read it from
# the clients' replies to show models are reused across rounds.
_BUILDS = 0


def builds() -> int:
    """How many models this process has built so far."""
    return _BUILDS


def build_model(
    mcfg: ModelConfig, pcfg: PeftConfig, num_classes: int, seed: int, rank: int | None = None
) -> nn.Module:
    """Build backbone and method from ``seed``; server and clients get identical models.

    ``rank``: a LoRA node's smaller rank (HetLoRA): the seeded rank-``r`` model, cut to
    its first ``rank`` components (:meth:`peft_strategies.lora.LoraTuning.truncate`).
    """
    global _BUILDS
    torch.manual_seed(seed)
    model = create_backbone(mcfg, num_classes)
    dims = ViTDims.of(model)
    method = get_method(pcfg.method)
    method.apply(model, pcfg.params)
    trainable = count_trainable(model)
    expected = method.num_trainable(dims, pcfg.params)
    if trainable != expected:
        raise RuntimeError(
            f"{pcfg.method}: {trainable} trainable parameters, formula says {expected}"
        )
    if rank is not None:
        method.truncate(model, rank)
        trainable = count_trainable(model)
    remember_initial(model, sharing_of(pcfg))  # where a client starts its local tensors
    _BUILDS += 1
    log.info(
        "PEFT method %s%s: %d trainable of %d parameters (%.3f%%)",
        pcfg.method,
        "" if rank is None else f" at rank {rank} (HetLoRA)",
        trainable,
        dims.num_params,
        100.0 * trainable / dims.num_params,
    )
    return model


@functools.lru_cache(maxsize=2)
def cached_model(
    mcfg: ModelConfig, pcfg: PeftConfig, num_classes: int, seed: int, rank: int | None = None
) -> nn.Module:
    """:func:`build_model`, once per process (a Ray worker reuses it across rounds).

    Safe to share between the clients a worker runs: every call site overwrites
    all trainable tensors before use and nothing else in the model changes. (With
    ``peft.lora.ranks`` a worker that runs nodes of two ranks holds both models.)
    """
    return build_model(mcfg, pcfg, num_classes, seed, rank)
