"""LoRA on the attention ``qkv`` projections, from the ``peft`` library.

``peft.inject_adapter_in_model`` adds ``lora_A``/``lora_B`` to each
``blocks.i.attn.qkv`` in place, so the model stays a timm
``VisionTransformer``. ``peft.lora.federation`` says which factors train and
travel (:data:`FEDERATIONS`): ``fedavg`` trains A and B and FedAvg averages them
separately, as standard FedAvg does (inexact: mean(B)·mean(A) ≠ mean(B·A));
``ffa`` (FFA-LoRA) keeps A at its seeded initialisation — the same on every client
and the server, since every process builds the model from the run's seed — and
trains and sends only B (and the head), which makes the average exact; ``fedsa``
(FedSA-LoRA) trains both but shares only A (and the head): each client's B stays in
its ``Context.state``; ``rolora`` (RoLoRA) trains and sends B in odd rounds and A in
even ones, the other factor frozen, so each round's average is exact. Exported for
inference, LoRA is merged into the ``qkv`` weights (:meth:`LoraTuning.fold`).

Heterogeneous ranks (HetLoRA): a node may train a smaller rank than ``r``
(:meth:`LoraTuning.truncate`, chosen by :mod:`fedpeft.hetlora`); it trains the first
``rank`` components of the run's rank-``r`` factors, with the same scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fedpeft.protocol import is_int

from .base import MethodConfig, PeftMethod, Sharing, ViTDims, freeze_all_but_head, lr_field
from .registry import register

# peft.lora.federation → the LoRA factors that train, and how they travel. On timm's
# fused qkv (in dim, out 3·dim) B holds three times A's parameters: of fedavg's factor
# bytes ffa sends 75%, fedsa 25%, rolora 75% and 25% in turn.
# FFA-LoRA: Sun et al., "Improving LoRA in Privacy-preserving Federated Learning",
# ICLR 2024 (A frozen at a shared random init, B from zero). FedSA-LoRA: Guo et al.,
# "Selective Aggregation for Low-Rank Adaptation in Federated Learning", ICLR 2025
# (A learns general knowledge and is shared, B stays on the client). RoLoRA: Chen et
# al., "Robust Federated Finetuning of LLMs via Alternating Optimization of LoRA",
# 2025 (B first: with B = 0 at init, A's gradient is zero).
FEDERATIONS: dict[str, tuple[tuple[str, ...], Sharing]] = {
    "fedavg": (("lora_A", "lora_B"), Sharing()),
    "ffa": (("lora_B",), Sharing()),
    "fedsa": (("lora_A", "lora_B"), Sharing(local=("lora_B",))),
    "rolora": (("lora_A", "lora_B"), Sharing(alternate=(("lora_B",), ("lora_A",)))),
}


@dataclass(frozen=True)
class LoraMethodConfig(MethodConfig):
    """Rank ``r``, scaling ``alpha`` (scale = alpha / r) and LoRA dropout."""

    lr: float = lr_field(0.005)
    r: int = field(default=8, metadata={"help": "LoRA rank (peft's LoRA on every block's qkv)"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling: scale = alpha / r"})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    federation: str = field(default="fedavg", metadata={
        "help": "which LoRA factors train and travel: `fedavg` (A and B, averaged "
                "separately), `ffa` (FFA-LoRA: A frozen at its seeded init, the same "
                "everywhere; only B and the head travel), `fedsa` (FedSA-LoRA: A and the "
                "head travel, each client keeps its B) or `rolora` (RoLoRA: B in odd "
                "rounds, A in even ones; the other factor frozen and not sent up)"})  # fmt: skip
    ranks: str = field(default="", metadata={
        "help": "HetLoRA in simulation: ranks given to the partitions in turn, e.g. "
                "\"4,8\" (partition p trains ranks[p mod 2]), each in [1, r]; a node's "
                "node-config `lora-rank` takes precedence. Empty: every node at r, unless "
                "its node-config says otherwise"})  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ValueError(f"r={self.r!r}: must be >= 1")
        if not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha!r}: must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r}: must be in [0, 1)")
        if self.federation not in FEDERATIONS:
            raise ValueError(f"federation={self.federation!r}: valid choices: "
                             f"{list(FEDERATIONS)}")  # fmt: skip
        self.rank_list()  # refuses a bad peft.lora.ranks

    def rank_list(self) -> tuple[int, ...]:
        """``ranks`` as integers, each checked to be in [1, r]."""
        items = [s.strip() for s in self.ranks.split(",")] if self.ranks.strip() else []
        if not all(s.isdigit() and 1 <= int(s) <= self.r for s in items):
            raise ValueError(f"ranks={self.ranks!r}: expected comma-separated integers "
                             f"in [1, r={self.r}], e.g. \"4,8\"")  # fmt: skip
        return tuple(int(s) for s in items)

    def check_rank(self, rank: int, source: str) -> int:
        """``rank`` if it is an integer in [1, r]; ``source`` names it in the error."""
        if not is_int(rank) or not 1 <= rank <= self.r:
            raise ValueError(f"{source}={rank!r}: a LoRA rank must be an integer in "
                             f"[1, peft.lora.r={self.r}]")  # fmt: skip
        return rank


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
        factors, _ = FEDERATIONS[cfg.federation]
        for name, param in model.named_parameters():
            if any(f".{factor}." in name for factor in factors):
                param.requires_grad_(True)
        return model

    def num_trainable(self, dims: ViTDims, cfg: LoraMethodConfig) -> int:
        # A: r × dim, B: 3·dim × r, per block.
        size = {"lora_A": cfg.r * dims.dim, "lora_B": 3 * dims.dim * cfg.r}
        factors, _ = FEDERATIONS[cfg.federation]
        return dims.head_params + dims.depth * sum(size[f] for f in factors)

    def truncate(self, model: nn.Module, rank: int) -> nn.Module:
        """Cut every LoRA layer to its first ``rank`` components, in place (HetLoRA).

        A's first ``rank`` rows and B's first ``rank`` columns stay, as seeded, and each
        layer keeps its scale (``alpha / r`` of the run's rank): B[:, :k]·A[:k] is exactly
        the first k rank-one terms of the full product, so the server's zero-padding and
        truncation (:mod:`fedpeft.hetlora`) move between the two without loss. peft has no
        API to resize an injected adapter, hence the two ``Linear`` swaps by hand.
        """
        from peft.tuners.lora import LoraLayer

        for layer in (m for m in model.modules() if isinstance(m, LoraLayer)):
            for adapter in layer.lora_A:
                if rank > layer.r[adapter]:
                    raise ValueError(f"rank {rank} is above the layer's {layer.r[adapter]}")
                layer.lora_A[adapter] = _cut(layer.lora_A[adapter], rows=rank)
                layer.lora_B[adapter] = _cut(layer.lora_B[adapter], cols=rank)
                layer.r[adapter] = rank  # layer.scaling[adapter] stays alpha / r
        return model

    def sharing(self, cfg: LoraMethodConfig) -> Sharing:
        """The variant's :class:`Sharing` (FedSA's local B, RoLoRA's alternation)."""
        return FEDERATIONS[cfg.federation][1]

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


def _cut(linear: nn.Linear, rows: int | None = None, cols: int | None = None) -> nn.Linear:
    """A bias-free ``Linear`` holding ``linear``'s first ``rows`` outputs / ``cols`` inputs."""
    weight = linear.weight.detach()[:rows, :cols].clone()
    cut = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device,
                    dtype=weight.dtype)  # fmt: skip
    with torch.no_grad():
        cut.weight.copy_(weight)
    cut.weight.requires_grad_(linear.weight.requires_grad)
    return cut
