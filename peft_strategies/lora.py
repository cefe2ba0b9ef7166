"""LoRA on the attention ``qkv`` projections, from the ``peft`` library.

``peft.inject_adapter_in_model`` adds ``lora_A``/``lora_B`` to each
``blocks.i.attn.qkv`` in place, so the model stays a timm
``VisionTransformer``. FedAvg averages A and B separately, as standard
FedAvg does (exact LoRA aggregation is later work). Exported for inference,
LoRA is merged into the ``qkv`` weights (:meth:`LoraTuning.fold`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims, freeze_all_but_head, lr_field
from .registry import register


@dataclass(frozen=True)
class LoraMethodConfig(MethodConfig):
    """Rank ``r``, scaling ``alpha`` (scale = alpha / r) and LoRA dropout."""

    lr: float = lr_field(0.005)
    r: int = field(default=8, metadata={"help": "LoRA rank (peft's LoRA on every block's qkv)"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling: scale = alpha / r"})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ValueError(f"r={self.r!r}: must be >= 1")
        if not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha!r}: must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r}: must be in [0, 1)")


@register
class LoraTuning(PeftMethod):
    """LoRA (rank r) on every block's qkv plus the head."""

    name = "lora"
    config_cls = LoraMethodConfig

    def apply(self, model: nn.Module, cfg: LoraMethodConfig) -> nn.Module:
        # Imported here: peft pulls in transformers (seconds), paid only when LoRA is used.
        from peft import LoraConfig, inject_adapter_in_model

        lora_cfg = LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=["qkv"],
            bias="none",
        )
        inject_adapter_in_model(lora_cfg, model)
        freeze_all_but_head(model)
        for name, param in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.requires_grad_(True)
        return model

    def num_trainable(self, dims: ViTDims, cfg: LoraMethodConfig) -> int:
        # A: r × dim, B: 3·dim × r, per block.
        return dims.head_params + dims.depth * cfg.r * (dims.dim + 3 * dims.dim)

    def fold(self, model: nn.Module, cfg: LoraMethodConfig) -> nn.Module:
        """Merge every LoRA layer into its ``qkv`` weight and put the plain layer back.

        peft's own merge (``LoraLayer.merge``: W += scale · B A), then each wrapper is
        replaced by its base layer, as ``merge_and_unload`` does for a ``PeftModel``:
        the result is the plain timm model, without ``lora_`` parameters.
        """
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
        for name, layer in layers:
            layer.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer.get_base_layer())
        if hasattr(model, "peft_config"):  # set by inject_adapter_in_model
            del model.peft_config
        return model

    def folded_structure(self, model: nn.Module, cfg: LoraMethodConfig) -> nn.Module:
        """Merged LoRA is the plain timm model."""
        return model
