"""Local DP-SGD on one client with Opacus (GradSampleModule + DPOptimizer).

Each step samples a batch by Poisson sampling (every image independently with
probability ``q = 1 / ceil(N / batch_size)``, as Opacus's ``DPDataLoader``),
clips every per-sample gradient to ``clip_norm``, adds Gaussian noise of std
``noise_multiplier · clip_norm`` to the sum and divides by the expected batch
size ``q · N``; the accountant records every step. The loop itself is
:func:`fedpeft.training.fit`, shared with plain training.
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
from opacus.accountants import IAccountant
from opacus.optimizers import DPOptimizer
from torch import nn

from ..config import TrainConfig
from ..data.tensors import ImageTensors
from ..device import release
from ..engine import Engine, make_engine
from ..training import Outcome, add_proximal, fit, model_inputs, proximal_start, sgd, trainable
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


def _generator(seed: int, secure: bool, device: torch.device | None = None) -> torch.Generator:
    return torch.Generator(device or "cpu").manual_seed(secrets.randbits(63) if secure else seed)


class DpStep:
    """Opacus's DPOptimizer step, with FedProx's data-free term added after the noise."""

    def __init__(self, optimizer: DPOptimizer, params: list[nn.Parameter], mu: float) -> None:
        self.optimizer, self.params, self.mu = optimizer, params, mu
        self.received = proximal_start(params, mu)

    def __call__(self, loss: torch.Tensor | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if loss is None:  # an empty Poisson batch is still a (noise-only) step
            for p in self.params:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        else:
            loss.backward()
        if self.optimizer.pre_step():  # clip, noise, account: DPOptimizer.step's first half
            add_proximal(self.params, self.received, self.mu)
            self.optimizer.original_optimizer.step()


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
    engine: Engine | None = None,
) -> PrivateOutcome:
    """DP-SGD over ``cfg.epochs`` epochs of Poisson batches; steps ``accountant`` each step.

    The loop is :func:`fedpeft.training.fit`'s, in fp32 (``engine``'s precision is
    resolved with ``private=True``). When only the head trains, Opacus wraps the head
    and the loop runs over the cached frozen features: the per-sample gradients are
    the same, the backbone runs once per image instead of once per step.
    ``batches`` replaces Poisson sampling (tests only: the accountant's ε then
    does not describe the batches used). With ``secure_rng`` the batches and
    the noise come from OS entropy and Opacus's floating-point-safe noise.
    """
    engine = engine or make_engine(model, cfg.device, cfg.precision, cfg.augment, private=True)
    torch.manual_seed(seed)
    params = trainable(model)
    n_trainable = sum(p.numel() for p in params)
    if n_trainable > LARGE_TRAINABLE:
        log.warning(
            "DP-SGD keeps one gradient per sample for %d trainable parameters "
            "(%.1f GB at batch %d); lower train.batch-size if memory runs out",
            n_trainable, 4 * n_trainable * cfg.batch_size / 1e9, cfg.batch_size,
        )  # fmt: skip
    sample_rate, per_epoch = sampling(len(data), cfg.batch_size)
    gen = _generator(seed, secure_rng)
    if batches is None:
        batches = poisson_batches(len(data), sample_rate, per_epoch * cfg.epochs, gen)
    forward, inputs = model_inputs(model, data, engine, cfg.batch_size, gen, cfg.caches_features)
    gsm = SharedAwareGradSampleModule(forward, batch_first=True, loss_reduction="mean")
    optimizer = DPOptimizer(
        sgd(params, cfg, lr),
        noise_multiplier=noise_multiplier,
        # C = inf (no clipping, noise 0 only): Opacus's std σ·C would be nan
        max_grad_norm=clip_norm if math.isfinite(clip_norm) else sys.float_info.max,
        expected_batch_size=sample_rate * len(data),
        loss_reduction="mean",
        generator=_generator(seed + 1, secure_rng, engine.device),
        secure_mode=secure_rng,
    )
    optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    gsm.train()
    step = DpStep(optimizer, params, cfg.proximal_mu)
    try:
        # Frozen layers before the first trainable one: torch notes that the full
        # backward hooks Opacus uses fire on outputs only, which is what it needs.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss, acc, steps = fit(gsm, batches, inputs, data.labels, engine, step)
    finally:
        gsm._close()  # the cached model leaves without hooks or per-sample state
        optimizer.zero_grad(set_to_none=True)  # .grad and Opacus's per-sample gradients
        optimizer.original_optimizer.state.clear()  # momentum
        for p in params:
            for attr in ("summed_grad", "grad_sample"):
                if hasattr(p, attr):
                    delattr(p, attr)
        step.received = None  # FedProx's copies
        release(engine.device)
    outcome = Outcome(loss, acc, len(data))
    return PrivateOutcome(outcome, steps, sample_rate)
