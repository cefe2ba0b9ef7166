"""Deep visual prompt tuning (VPT-deep): learnable tokens at every layer.

Prompts are inserted after the prefix (class) tokens by forward pre-hooks on
each block and removed after the last block, so timm's
``VisionTransformer`` is used unchanged (no subclass) and pooling sees the
usual token layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims, freeze_all_but_head, lr_field
from .registry import register


class DeepPrompts(nn.Module):
    """``depth × num_tokens × dim`` prompt tokens with prompt dropout."""

    def __init__(
        self,
        depth: int,
        num_tokens: int,
        dim: int,
        patch_area: int,
        dropout: float,
        prefix: int = 1,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.tokens = nn.Parameter(torch.empty(depth, num_tokens, dim))
        # VPT's initialisation: uniform with Xavier bound over patch_dim + dim.
        bound = math.sqrt(6.0 / float(3 * patch_area + dim))
        nn.init.uniform_(self.tokens, -bound, bound)
        self.dropout = nn.Dropout(dropout)

    def mask(self, index: int) -> torch.Tensor:
        """Prompt-dropout scale of layer ``index`` (0 or ``1/(1-p)``; ones in eval mode)."""
        return self.dropout(torch.ones_like(self.tokens[index]))

    def forward(self, index: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Insert layer ``index``'s prompts (times dropout ``scale``) after the prefix tokens.

        Layer 0 inserts; later layers replace the previous layer's prompts. The
        inputs are tensors, ``x`` last, so that Opacus's hooks can record them
        (:mod:`fedpeft.dp.grad_samplers` computes per-sample gradients from them).
        """
        i = int(index)
        keep_from = self.prefix if i == 0 else self.prefix + self.tokens.shape[1]
        p = (self.tokens[i] * scale).unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
        return torch.cat([x[:, : self.prefix], p, x[:, keep_from:]], dim=1)


def _attach(model: nn.Module, prompts: DeepPrompts) -> None:
    prefix, num = prompts.prefix, prompts.tokens.shape[1]
    last = len(model.blocks) - 1

    def make_pre_hook(index: int):  # noqa: ANN202
        def hook(_module: nn.Module, args: tuple) -> tuple:
            i = torch.tensor(index)
            return (prompts(i, prompts.mask(index), args[0]), *args[1:])

        return hook

    def strip_hook(_module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        return torch.cat([out[:, :prefix], out[:, prefix + num :]], dim=1)

    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(make_pre_hook(i))
    model.blocks[last].register_forward_hook(strip_hook)


@dataclass(frozen=True)
class PromptConfig(MethodConfig):
    """``num_tokens`` prompts per layer; ``dropout`` on the prompts."""

    lr: float = lr_field(0.002)
    num_tokens: int = field(default=10, metadata={"help": "deep VPT: prompt tokens per layer"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the prompts"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_tokens < 1:
            raise ValueError(f"num-tokens={self.num_tokens!r}: must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r}: must be in [0, 1)")


@register
class PromptTuning(PeftMethod):
    """Deep visual prompts plus the head."""

    name = "prompt"
    config_cls = PromptConfig

    def apply(self, model: nn.Module, cfg: PromptConfig) -> nn.Module:
        freeze_all_but_head(model)
        patch = model.patch_embed.patch_size
        prompts = DeepPrompts(
            depth=len(model.blocks),
            num_tokens=cfg.num_tokens,
            dim=model.embed_dim,
            patch_area=int(patch[0] * patch[1]),
            dropout=cfg.dropout,
            prefix=model.num_prefix_tokens,
        )
        model.add_module("prompts", prompts)
        _attach(model, prompts)
        return model

    def num_trainable(self, dims: ViTDims, cfg: PromptConfig) -> int:
        return dims.head_params + dims.depth * cfg.num_tokens * dims.dim
