"""Bottleneck adapters on the MLP branch of every block (FedPEFT's "adapter").

The adapter (down-projection, GELU, zero-initialised up-projection) reads the
MLP's input and its output is added to the MLP output, inside the residual
branch: ``x + mlp(h) + up(gelu(down(h)))`` with ``h = norm2(x)`` (the parallel
placement of AdaptFormer). The paper shares one adapter across all blocks;
``shared=false`` gives one adapter per block. With the up-projection at zero
the adapted model starts as the pretrained one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims, freeze_all_but_head, lr_field
from .registry import register


class Adapter(nn.Module):
    """``up(act(down(x)))`` with a zero-initialised up-projection."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class MlpWithAdapter(nn.Module):
    """Wraps a block's frozen MLP and adds the adapter's output to it."""

    def __init__(self, mlp: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.mlp = mlp
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + self.adapter(x)


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """``reduction``: bottleneck = dim // reduction; ``shared``: one for all blocks."""

    lr: float = lr_field(0.002)
    reduction: int = field(default=8, metadata={"help": "bottleneck width = dim / reduction"})
    shared: bool = field(default=True, metadata={"help": "one adapter shared by all blocks "
                                                 "(the paper) or one per block"})  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reduction < 1:
            raise ValueError(f"reduction={self.reduction!r}: must be >= 1")


@register
class AdapterTuning(PeftMethod):
    """Bottleneck adapter(s) on the MLP branch plus the head."""

    name = "adapter"
    config_cls = AdapterConfig

    def apply(self, model: nn.Module, cfg: AdapterConfig) -> nn.Module:
        freeze_all_but_head(model)
        dim = model.embed_dim
        hidden = max(1, dim // cfg.reduction)
        shared = Adapter(dim, hidden) if cfg.shared else None
        for block in model.blocks:
            adapter = shared if shared is not None else Adapter(dim, hidden)
            block.mlp = MlpWithAdapter(block.mlp, adapter)
        return model

    def num_trainable(self, dims: ViTDims, cfg: AdapterConfig) -> int:
        hidden = max(1, dims.dim // cfg.reduction)
        one = dims.dim * hidden + hidden + hidden * dims.dim + dims.dim
        return dims.head_params + one * (1 if cfg.shared else dims.depth)
