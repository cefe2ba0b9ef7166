"""The interface every PEFT method implements; it knows nothing about Flower."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn


@dataclass(frozen=True)
class ViTDims:
    """Shape facts of a timm VisionTransformer that parameter formulas need."""

    depth: int
    dim: int
    mlp_hidden: int
    num_classes: int
    num_bias_params: int
    num_params: int

    @classmethod
    def of(cls, model: nn.Module) -> ViTDims:
        """Read the dimensions of an unmodified timm ``VisionTransformer``."""
        blocks = model.blocks
        return cls(
            depth=len(blocks),
            dim=model.embed_dim,
            mlp_hidden=blocks[0].mlp.fc1.out_features,
            num_classes=model.num_classes,
            num_bias_params=sum(
                p.numel() for n, p in model.named_parameters() if n.endswith(".bias")
            ),
            num_params=sum(p.numel() for p in model.parameters()),
        )

    @property
    def head_params(self) -> int:
        """Parameters of the linear classification head (weight and bias)."""
        return self.num_classes * self.dim + self.num_classes


def _named(name: str, parts: tuple[str, ...]) -> bool:
    return any(f".{part}." in name or name.startswith(f"{part}.") for part in parts)


@dataclass(frozen=True)
class Sharing:
    """Which of a method's trainable tensors travel, and in which rounds.

    The default: every trainable tensor trains on every client and travels both ways
    every round. ``local``: name parts (``lora_B`` matches ``….lora_B.default.weight``,
    ``head`` matches ``head.weight``)
    of tensors that train on the client and never leave it (FedSA-LoRA's B, kept in the
    client's ``Context.state``). ``alternate``: groups of name parts, one per round in
    turn (round 1 the first group); a tensor of another group stays frozen that round
    and is not sent up (RoLoRA: B in odd rounds, A in even ones). The server holds and
    sends down every trainable tensor that is not local.
    """

    local: tuple[str, ...] = ()
    alternate: tuple[tuple[str, ...], ...] = ()

    def is_local(self, name: str) -> bool:
        """``name`` trains on the client only: it is neither sent nor received."""
        return _named(name, self.local)

    def trains(self, name: str, server_round: int) -> bool:
        """``name`` trains in ``server_round`` (and, unless local, travels up in the reply)."""
        if not self.alternate:
            return True
        turn = (server_round - 1) % len(self.alternate)
        others = tuple(p for i, g in enumerate(self.alternate) if i != turn for p in g)
        return _named(name, self.alternate[turn]) or not _named(name, others)


def lr_field(default: float) -> Any:
    """The ``peft.<method>.lr`` field with the method's default learning rate."""
    return field(default=default, metadata={"help": "local SGD learning rate, sent by the "
                                            "server each round (defaults checked on the "
                                            "offline ViT-S/14)"})  # fmt: skip


@dataclass(frozen=True)
class MethodConfig:
    """Hyper-parameters shared by every method; subclasses add their own.

    Fields are ``peft.<method>.<field>`` run-config keys (``_`` → ``-``), each with its
    meaning in ``metadata["help"]`` as peft's configs have it.
    """

    lr: float = lr_field(1e-3)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r}: must be > 0")


class PeftMethod(ABC):
    """A parameter-efficient fine-tuning method for a timm ViT.

    ``apply`` freezes the backbone, attaches the method's modules, and leaves
    ``requires_grad=True`` on exactly the parameters the method trains (the
    classification head always among them).
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    # Whether every backbone weight trains (full fine-tuning): the server optimizer's
    # default lr may differ then (fedpeft.server_opt.ServerOptimizer.default_lr_for)
    trains_backbone: ClassVar[bool] = False

    @abstractmethod
    def apply(self, model: nn.Module, cfg: Any) -> nn.Module:
        """Attach the method to ``model`` in place and return it."""

    @abstractmethod
    def num_trainable(self, dims: ViTDims, cfg: Any) -> int:
        """Closed-form count of trainable parameters (head included)."""

    def sharing(self, cfg: Any) -> Sharing:
        """Which trainable tensors travel, and when; the default: all, every round."""
        return Sharing()

    def truncate(self, model: nn.Module, rank: int) -> nn.Module:
        """Cut the method's tensors to a smaller ``rank`` (HetLoRA); only LoRA has one."""
        raise ValueError(f"peft.method={self.name!r} has no rank to cut to {rank}")

    def fold(self, model: nn.Module, cfg: Any) -> nn.Module:
        """The trained ``model`` (after :meth:`apply`) as it is exported for inference.

        A method whose tensors can be merged into the backbone's weights does so here
        (in place) and returns the plain timm model; the default folds nothing: the
        method's tensors are already timm weights (head, biases, all) or stay modules on
        top of the timm model (adapters, prompts).
        """
        return model

    def folded_structure(self, model: nn.Module, cfg: Any) -> nn.Module:
        """The module structure :meth:`fold` leaves, rebuilt on a bare timm ``model``.

        The exported weights are loaded into it strictly. The default is :meth:`apply`'s
        structure; a method that folds into the backbone returns ``model`` unchanged.
        """
        return self.apply(model, cfg)


def freeze_all_but_head(model: nn.Module) -> None:
    """Freeze every parameter of ``model`` except its classification head."""
    for param in model.parameters():
        param.requires_grad_(False)
    for param in model.get_classifier().parameters():
        param.requires_grad_(True)


def count_trainable(model: nn.Module) -> int:
    """Number of trainable parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
