"""Head only (linear probing): the frozen backbone is a feature extractor."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .base import MethodConfig, PeftMethod, ViTDims, freeze_all_but_head, lr_field
from .registry import register

HEAD_INITS = ("default", "ncm")


@dataclass(frozen=True)
class HeadConfig(MethodConfig):
    """``peft.head.*``: the head method's lr, and how every method's head starts.

    ``init`` applies to the classification head whatever ``peft.method`` is (every
    method trains it): ``ncm`` sets it, before round 1, to the normalised class means of
    the frozen features (FedNCM, Legate et al. 2023); ``local`` keeps it on each client.
    """

    lr: float = lr_field(0.05)
    init: str = field(default="default", metadata={
        "help": "how the head starts, for every method: `default` (timm's init) or `ncm` "
                "(the normalised class means of the clients' features, a round of its own "
                "before round 1; refused under DP)"})  # fmt: skip

    local: bool = field(default=False, metadata={
        "help": "the head trains on each client and never travels (kept in its "
                "Context.state, as FedSA-LoRA keeps B): a personalised head, measured by "
                "server.fraction-evaluate; the global model keeps timm's head"})  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in HEAD_INITS:
            raise ValueError(f"init={self.init!r}: choose one of {list(HEAD_INITS)}")


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
