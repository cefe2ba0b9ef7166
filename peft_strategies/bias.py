"""Bias tuning (BitFit): every bias of the backbone plus the head."""

from __future__ import annotations

from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims, freeze_all_but_head
from .registry import register


@register
class BiasTuning(PeftMethod):
    """Train all biases: qkv, proj, fc1, fc2, LayerNorms and patch embedding."""

    name = "bias"
    config_cls = MethodConfig

    def apply(self, model: nn.Module, cfg: MethodConfig) -> nn.Module:
        freeze_all_but_head(model)
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.requires_grad_(True)
        return model

    def num_trainable(self, dims: ViTDims, cfg: MethodConfig) -> int:
        # num_bias_params already includes the head's bias.
        return dims.num_bias_params + dims.num_classes * dims.dim
