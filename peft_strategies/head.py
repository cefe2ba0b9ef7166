"""Head only (linear probing): the frozen backbone is a feature extractor."""

from __future__ import annotations

from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims, freeze_all_but_head
from .registry import register


@register
class HeadOnly(PeftMethod):
    """Train only the classification head."""

    name = "head"
    config_cls = MethodConfig

    def apply(self, model: nn.Module, cfg: MethodConfig) -> nn.Module:
        freeze_all_but_head(model)
        return model

    def num_trainable(self, dims: ViTDims, cfg: MethodConfig) -> int:
        return dims.head_params
