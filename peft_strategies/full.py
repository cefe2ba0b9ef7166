"""Full fine-tuning: every parameter trains and travels (the baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims, lr_field
from .registry import register


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """``peft.full.*``: the learning rate only."""

    lr: float = lr_field(0.0005)


@register
class FullFineTuning(PeftMethod):
    """Train all parameters of the backbone and the head."""

    name = "full"
    config_cls = FullConfig
    trains_backbone = True

    def apply(self, model: nn.Module, cfg: FullConfig) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def num_trainable(self, dims: ViTDims, cfg: FullConfig) -> int:
        return dims.num_params
