"""Local DP-SGD on one client with Opacus (GradSampleModule + DPOptimizer).

Each step samples a batch by Poisson sampling (every image independently with
probability ``q = 1 / ceil(N / batch_size)``, as Opacus's ``DPDataLoader``),
clips every per-sample gradient to ``clip_norm``, adds Gaussian noise of std
``noise_multiplier · clip_norm`` to the sum and divides by the expected batch
size ``q · N``; the accountant records every step. :func:`fedpeft.training.train_local`
stays the non-private path.
"""

from __future__ import annotations

import logging
import math
import secrets
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from opacus.accountants import IAccountant
from opacus.optimizers import DPOptimizer
from torch import nn

from ..config import TrainConfig
from ..data.tensors import ImageTensors, normalize
from ..training import Outcome, _stats, add_proximal, proximal_start
from .grad_samplers import SharedAwareGradSampleModule

log = logging.getLogger(__name__)

# Per-sample gradients of more trainable parameters than this get a memory warning.
LARGE_TRAINABLE = 5_000_000


@dataclass(frozen=True)
class PrivateOutcome:
    """The training outcome plus what the accountant was told."""

    outcome: Outcome
    steps: int
    sample_rate: float


def sampling(num_examples: int, batch_size: int) -> tuple[float, int]:
    """Poisson sample rate and steps per epoch (Opacus's ``DPDataLoader`` choice)."""
    steps = max(1, math.ceil(num_examples / batch_size))
    return 1.0 / steps, steps


def poisson_batches(
    num_examples: int, sample_rate: float, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """``steps`` index batches, each image included independently with ``sample_rate``."""
    for _ in range(steps):
        mask = torch.rand(num_examples, generator=generator) < sample_rate
        yield mask.nonzero().squeeze(1)


def _generator(seed: int, secure: bool) -> torch.Generator:
    return torch.Generator().manual_seed(secrets.randbits(63) if secure else seed)


def train_private(
    model: nn.Module,
    data: ImageTensors,
    cfg: TrainConfig,
    lr: float,
    seed: int,
    *,
    noise_multiplier: float,
    clip_norm: float,
    accountant: IAccountant,
    secure_rng: bool = False,
    batches: Iterable[torch.Tensor] | None = None,
) -> PrivateOutcome:
    """DP-SGD over ``cfg.epochs`` epochs of Poisson batches; steps ``accountant`` each step.

    ``batches`` replaces Poisson sampling (tests only: the accountant's ε then
    does not describe the batches used). With ``secure_rng`` the batches and
    the noise come from OS entropy and Opacus's floating-point-safe noise.
    """
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    received = proximal_start(params, cfg.proximal_mu)
    n_trainable = sum(p.numel() for p in params)
    if n_trainable > LARGE_TRAINABLE:
        log.warning(
            "DP-SGD keeps one gradient per sample for %d trainable parameters "
            "(%.1f GB at batch %d); lower train.batch-size if memory runs out",
            n_trainable, 4 * n_trainable * cfg.batch_size / 1e9, cfg.batch_size,
        )  # fmt: skip
    sample_rate, per_epoch = sampling(len(data), cfg.batch_size)
    if batches is None:
        gen = _generator(seed, secure_rng)
        batches = poisson_batches(len(data), sample_rate, per_epoch * cfg.epochs, gen)
    sgd = torch.optim.SGD(
        params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    gsm = SharedAwareGradSampleModule(model, batch_first=True, loss_reduction="mean")
    optimizer = DPOptimizer(
        sgd,
        noise_multiplier=noise_multiplier,
        # C = inf (no clipping, noise 0 only): Opacus's std σ·C would be nan
        max_grad_norm=clip_norm if math.isfinite(clip_norm) else sys.float_info.max,
        expected_batch_size=sample_rate * len(data),
        loss_reduction="mean",
        generator=_generator(seed + 1, secure_rng),
        secure_mode=secure_rng,
    )
    optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    mean, std = _stats(model)
    gsm.train()
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    try:
        # Frozen layers before the first trainable one: torch notes that the full
        # backward hooks Opacus uses fire on outputs only, which is what it needs.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for idx in batches:
            optimizer.zero_grad(set_to_none=True)
            if len(idx) == 0:  # an empty Poisson batch is still a (noise-only) step
                for p in params:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
            else:
                x = normalize(data.images[idx], mean, std)
                y = data.labels[idx]
                logits = gsm(x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(idx)
            if optimizer.pre_step():  # clip, noise, account: DPOptimizer.step's first half
                add_proximal(params, received, cfg.proximal_mu)  # data-free: after the noise
                optimizer.original_optimizer.step()
            steps += 1
    finally:
        gsm._close()  # the cached model leaves without hooks or per-sample state
        for p in params:
            if hasattr(p, "summed_grad"):
                del p.summed_grad
    seen = max(seen, 1)
    return PrivateOutcome(Outcome(total_loss / seen, correct / seen, len(data)), steps, sample_rate)
