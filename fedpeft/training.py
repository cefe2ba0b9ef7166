"""Local SGD training and evaluation on uint8 image tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import normalization
from .config import TrainConfig
from .data.tensors import ImageTensors, normalize


@dataclass(frozen=True)
class Outcome:
    """Mean loss and accuracy over ``num_examples`` images."""

    loss: float
    accuracy: float
    num_examples: int


def client_seed(seed: int, server_round: int, partition_id: int) -> int:
    """Training seed of one client in one round, independent of which worker runs it."""
    return seed * 1_000_003 + server_round * 10_007 + partition_id


def proximal_start(params: list[nn.Parameter], mu: float) -> list[torch.Tensor] | None:
    """The received values of ``params`` for FedProx's proximal term (``None`` when μ = 0)."""
    return [p.detach().clone() for p in params] if mu > 0 else None


def add_proximal(
    params: list[nn.Parameter], received: list[torch.Tensor] | None, mu: float
) -> None:
    """Add FedProx's ∇ (μ/2)·‖w − w_received‖² = μ·(w − w_received) to each ``p.grad``.

    Over the trainable tensors only (the frozen backbone never moves). Added to the
    gradient, not the loss, so DP-SGD can add it after clipping and noise: it does not
    depend on the data, so it costs no privacy (Li et al. 2020; as weight decay).
    """
    if received is None:
        return
    with torch.no_grad():
        for p, p0 in zip(params, received, strict=True):
            if p.grad is not None:
                p.grad.add_(p - p0, alpha=mu)


def _stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = normalization(model)
    return torch.tensor(mean), torch.tensor(std)


def train_local(
    model: nn.Module, data: ImageTensors, cfg: TrainConfig, lr: float, seed: int
) -> Outcome:
    """Train the model's trainable parameters with SGD; deterministic given ``seed``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    received = proximal_start(params, cfg.proximal_mu)
    optimizer = torch.optim.SGD(
        params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    mean, std = _stats(model)
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            x = normalize(data.images[idx], mean, std)
            y = data.labels[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            add_proximal(params, received, cfg.proximal_mu)
            optimizer.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
    seen = max(seen, 1)
    return Outcome(total_loss / seen, correct / seen, len(data))


@torch.inference_mode()
def evaluate(model: nn.Module, data: ImageTensors, batch_size: int) -> Outcome:
    """Loss and accuracy of ``model`` on ``data``."""
    mean, std = _stats(model)
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(data), batch_size):
        x = normalize(data.images[start : start + batch_size], mean, std)
        y = data.labels[start : start + batch_size]
        logits = model(x)
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(data), 1)
    loss = total_loss / n
    return Outcome(loss if math.isfinite(loss) else float("nan"), correct / n, len(data))
