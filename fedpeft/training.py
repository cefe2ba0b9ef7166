"""The one local-training loop (plain SGD and DP-SGD) and evaluation, on any device.

:func:`fit` runs index batches through a model (or, when only the head trains, the
head over cached frozen features, :mod:`fedpeft.features`) under the engine's
precision and hands each loss to a stepper: :class:`SgdStep` here, Opacus's
DP optimizer in :mod:`fedpeft.dp.local`, which also supplies Poisson batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from .config import TrainConfig
from .data.batches import to_device
from .data.tensors import ImageTensors
from .device import release
from .engine import Engine, make_engine
from .features import cached_features


@dataclass(frozen=True)
class Outcome:
    """Mean loss and accuracy over ``num_examples`` images.

    From :func:`evaluate` with ``scores``, also the balanced accuracy and the ROC AUC
    (:mod:`fedpeft.metrics`); otherwise NaN.
    """

    loss: float
    accuracy: float
    num_examples: int
    balanced_accuracy: float = math.nan
    auc: float = math.nan


def client_seed(seed: int, server_round: int, partition_id: int) -> int:
    """Training seed of one client in one round, independent of which worker runs it."""
    return seed * 1_000_003 + server_round * 10_007 + partition_id


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer updates (and the client sends)."""
    return [p for p in model.parameters() if p.requires_grad]


def sgd(params: list[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.SGD:
    """The local optimizer: SGD with ``train.momentum`` / ``nesterov`` / ``weight-decay``."""
    return torch.optim.SGD(
        params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


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


class Stepper(Protocol):
    """Turns one batch's loss into a parameter update."""

    def __call__(self, loss: torch.Tensor | None) -> None:
        """Update from ``loss``; ``None``: an empty batch (DP-SGD's noise-only step)."""


class SgdStep:
    """zero_grad, backward (loss-scaled for fp16), FedProx's term, SGD step."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], mu: float,
        scaler: torch.amp.GradScaler,
    ) -> None:  # fmt: skip
        self.optimizer, self.params, self.mu = optimizer, params, mu
        self.received = proximal_start(params, mu)
        self.scaler = scaler

    def close(self) -> None:
        """Drop the gradients, the momentum and FedProx's copies (the scaler stays)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
        self.received = None

    def __call__(self, loss: torch.Tensor | None) -> None:
        if loss is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.received is not None:
            self.scaler.unscale_(self.optimizer)  # the proximal term is in real units
            add_proximal(self.params, self.received, self.mu)
        self.scaler.step(self.optimizer)
        self.scaler.update()


def shuffled_batches(
    n: int, batch_size: int, epochs: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Index batches over ``epochs`` seeded permutations of ``range(n)``."""
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        yield from order.split(batch_size)


def fit(
    forward: nn.Module,
    batches: Iterable[torch.Tensor],
    inputs: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    engine: Engine,
    step: Stepper,
) -> tuple[float, float, int]:
    """Train over ``batches`` (index tensors): mean loss, accuracy and number of steps.

    Loss and accuracy are over the images seen; every batch, an empty one too, is a step.

    ``inputs(idx)`` gives the batch on the engine's device. Labels are picked on the host
    and copied without blocking, and loss and accuracy add up on the device, so a GPU is
    not synchronised every step.
    """
    loss_sum = torch.zeros((), device=engine.device)
    correct = torch.zeros((), dtype=torch.long, device=engine.device)
    seen = steps = 0
    for idx in batches:
        steps += 1
        if len(idx) == 0:
            step(None)
            continue
        x, y = inputs(idx), to_device(labels[idx], engine.device)
        with engine.precision.autocast():
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), y)
        step(loss)
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
    seen = max(seen, 1)
    return float(loss_sum) / seen, int(correct) / seen, steps


def model_inputs(
    model: nn.Module, data: ImageTensors, engine: Engine, batch_size: int,
    generator: torch.Generator | None, cache: bool,
) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:  # fmt: skip
    """What :func:`fit` runs: the head on cached features where valid, else the whole model."""
    feats = cached_features(model, data, engine, batch_size) if cache else None
    if feats is not None:
        return model.head, lambda idx: feats[to_device(idx, engine.device)]
    return model, lambda idx: engine.pipeline(data.images[idx], generator)


def train_local(
    model: nn.Module, data: ImageTensors, cfg: TrainConfig, lr: float, seed: int,
    engine: Engine | None = None, scaler: torch.amp.GradScaler | None = None,
) -> Outcome:  # fmt: skip
    """Train the model's trainable parameters with SGD; deterministic given ``seed``.

    ``scaler``: fp16's loss scaler, to start from the scale a client's last round ended
    at (:func:`fedpeft.precision.kept_scaler`); by default a fresh one. When it returns,
    the gradients, the momentum and FedProx's copies are gone and the device's cached
    blocks are given back: a worker idle between rounds holds the model alone.
    """
    engine = engine or make_engine(model, cfg.device, cfg.precision, cfg.augment)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    params = trainable(model)
    step = SgdStep(sgd(params, cfg, lr), params, cfg.proximal_mu,
                   scaler or engine.precision.scaler())  # fmt: skip
    forward, inputs = model_inputs(
        model, data, engine, cfg.batch_size, generator, cfg.caches_features
    )
    model.train()
    batches = shuffled_batches(len(data), cfg.batch_size, cfg.epochs, generator)
    try:
        loss, acc, _ = fit(forward, batches, inputs, data.labels, engine, step)
    finally:
        step.close()
        release(engine.device)
    return Outcome(loss, acc, len(data))


@torch.inference_mode()
def evaluate(
    model: nn.Module, data: ImageTensors, batch_size: int, engine: Engine | None = None,
    cache: bool = True, scores: bool = False,
) -> Outcome:  # fmt: skip
    """Loss and accuracy of ``model`` on ``data`` (with ``scores``, more; see below).

    ``scores`` (the server's evaluation): also the balanced accuracy and the ROC AUC
    (:mod:`fedpeft.metrics`); without, they are NaN. The head runs on cached features
    where valid. Without an ``engine``: on the CPU in fp32 (the model is moved there).
    """
    engine = engine or make_engine(model)
    forward, inputs = model_inputs(model, data, engine, batch_size, None, cache)
    model.eval()
    wide = torch.float32 if engine.device.type == "mps" else torch.float64  # MPS has no fp64
    loss_sum = torch.zeros((), dtype=wide, device=engine.device)
    correct = torch.zeros((), dtype=torch.long, device=engine.device)
    odds = []
    for idx in torch.arange(len(data)).split(batch_size):
        with engine.precision.autocast():
            logits = forward(inputs(idx)).float()
        y = to_device(data.labels[idx], engine.device)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").to(wide)
        correct += (logits.argmax(1) == y).sum()
        if scores:
            odds.append(metrics.ovr_log_odds(logits).cpu())
    release(engine.device)
    n = max(len(data), 1)
    loss = float(loss_sum) / n
    outcome = Outcome(loss if math.isfinite(loss) else float("nan"), int(correct) / n, len(data))
    if not scores or not odds:
        return outcome
    truth, odds_np = data.labels.numpy(), torch.cat(odds).numpy()
    return dataclasses.replace(
        outcome,
        balanced_accuracy=metrics.balanced_accuracy(truth, odds_np),
        auc=metrics.auc(truth, odds_np),
    )
