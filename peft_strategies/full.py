"""Full fine-tuning: every parameter trains and travels (the baseline)."""

from __future__ import annotations

from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims
from .registry import register


@register
class FullFineTuning(PeftMethod):
    """Train all parameters of the backbone and the head."""

    name = "full"
    config_cls = MethodConfig

    def apply(self, model: nn.Module, cfg: MethodConfig) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def num_trainable(self, dims: ViTDims, cfg: MethodConfig) -> int:
        return dims.num_params
