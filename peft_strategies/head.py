"""Head only (linear probing): the frozen backbone is a feature extractor."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims, freeze_all_but_head, lr_field
from .registry import register


@dataclass(frozen=True)
class HeadConfig(MethodConfig):
    """``peft.head.*``: the learning rate only."""

    lr: float = lr_field(0.05)


@register
class HeadOnly(PeftMethod):
    """Train only the classification head."""

    name = "head"
    config_cls = HeadConfig

    def apply(self, model: nn.Module, cfg: HeadConfig) -> nn.Module:
        freeze_all_but_head(model)
        return model

    def num_trainable(self, dims: ViTDims, cfg: HeadConfig) -> int:
        return dims.head_params
