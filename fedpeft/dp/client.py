"""One client's private round: restore its accountant, calibrate, train, report ε.

The accountant lives in the node's ``Context.state`` (kept by Flower across
rounds) under :data:`STATE_KEY`, so the ε a client reports is cumulative over
every round it took part in.
"""

from __future__ import annotations

import logging

from flwr.app import RecordDict
from torch import nn

from .. import protocol
from ..config import RunConfig
from ..data.tensors import ImageTensors
from ..engine import Engine
from ..training import Outcome
from . import accounting, warn_delta
from .local import sampling, train_private

log = logging.getLogger(__name__)

STATE_KEY = "dp-accountant"


def noise_multiplier(cfg: RunConfig, num_examples: int) -> float:
    """``dp.noise-multiplier``, or calibrated to (ε, δ) over the planned steps.

    Planned steps assume the worst case: this client is sampled in every one of
    ``server.num-rounds`` rounds, ``train.epochs`` epochs of ``ceil(N / batch)``
    Poisson steps each. A client sampled less often ends below the target ε.
    """
    dp = cfg.dp
    if not dp.calibrate:
        return dp.noise_multiplier
    rate, per_epoch = sampling(num_examples, cfg.train.batch_size)
    steps = cfg.server.num_rounds * cfg.train.epochs * per_epoch
    return accounting.calibrate(dp.epsilon, dp.delta, rate, steps, dp.accountant)


def private_round(
    model: nn.Module,
    data: ImageTensors,
    cfg: RunConfig,
    seed: int,
    state: RecordDict,
    partition_id: int,
    lr: float | None = None,
    engine: Engine | None = None,
) -> tuple[Outcome, dict[str, float | int]]:
    """Train with DP-SGD and return the outcome and the ``dp-*`` reply metrics.

    ``lr`` is the learning rate the server sent (``None``: the configured ``cfg.lr``).
    """
    dp = cfg.dp
    warn_delta(dp.delta, len(data), f"client {partition_id}")
    accountant = accounting.from_record(state.config_records.get(STATE_KEY), dp.accountant)
    sigma = noise_multiplier(cfg, len(data))
    result = train_private(
        model, data, cfg.train, cfg.lr if lr is None else lr, seed,
        noise_multiplier=sigma, clip_norm=dp.clip_norm, accountant=accountant,
        secure_rng=dp.secure_rng, engine=engine,
    )  # fmt: skip
    state[STATE_KEY] = accounting.to_record(accountant)
    eps = accounting.epsilon(accountant, dp.delta)
    log.info(
        "client %d: DP-SGD %d steps at q=%.4g, σ=%.4f, C=%g; ε=%.4f at δ=%g so far",
        partition_id, result.steps, result.sample_rate, sigma, dp.clip_norm, eps, dp.delta,
    )  # fmt: skip
    metrics = {
        protocol.DP_EPSILON: eps,
        "dp-delta": dp.delta,
        "dp-noise-multiplier": sigma,
        "dp-sample-rate": result.sample_rate,
        "dp-steps": accounting.total_steps(accountant),
    }
    return result.outcome, metrics
