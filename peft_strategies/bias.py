"""Bias tuning (BitFit): every bias of the backbone plus the head."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims, freeze_all_but_head, lr_field
from .registry import register


@dataclass(frozen=True)
class BiasConfig(MethodConfig):
    """``peft.bias.*``: the learning rate only."""

    lr: float = lr_field(0.002)


@register
class BiasTuning(PeftMethod):
    """Train all biases: qkv, proj, fc1, fc2, LayerNorms and patch embedding."""

    name = "bias"
    config_cls = BiasConfig

    def apply(self, model: nn.Module, cfg: BiasConfig) -> nn.Module:
        freeze_all_but_head(model)
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.requires_grad_(True)
        return model

    def num_trainable(self, dims: ViTDims, cfg: BiasConfig) -> int:
        # num_bias_params already includes the head's bias.
        return dims.num_bias_params + dims.num_classes * dims.dim
