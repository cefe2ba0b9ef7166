"""Learning-rate schedules over rounds (``train.lr-schedule``): the lr the server sends.

A schedule maps round ``r`` (1-based) to a factor of ``peft.<method>.lr``. A linear
warm-up (``train.warmup-rounds`` = W) comes first: round ``r <= W`` gets ``r / W``;
the schedule then runs over the remaining ``K = num_rounds - W`` rounds, its ``k``-th
(1-based) round getting ``factor(k, K)``. Every factor is > 0, so every round trains.
Adding a schedule is one function registered in :data:`SCHEDULES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from .registry import Registry

if TYPE_CHECKING:
    from .config import TrainConfig

Factor = Callable[[int, int, "TrainConfig"], float]
SCHEDULES: Registry[Factor] = Registry("learning-rate schedule")


@SCHEDULES.register("constant")
def constant(k: int, total: int, cfg: TrainConfig) -> float:
    """The same lr every round."""
    return 1.0


@SCHEDULES.register("cosine")
def cosine(k: int, total: int, cfg: TrainConfig) -> float:
    """Half a cosine from 1 at the first round towards 0 after the last (never 0)."""
    return 0.5 * (1.0 + math.cos(math.pi * (k - 1) / max(total, 1)))


@SCHEDULES.register("step")
def step(k: int, total: int, cfg: TrainConfig) -> float:
    """Times ``train.lr-gamma`` every ``train.lr-step-rounds`` rounds."""
    return cfg.lr_gamma ** ((k - 1) // cfg.lr_step_rounds)


def lr_schedule(cfg: TrainConfig, base_lr: float, num_rounds: int) -> Callable[[int], float]:
    """Round → the lr the server sends that round."""
    factor = SCHEDULES.get(cfg.lr_schedule, "train.lr-schedule")
    warmup = cfg.warmup_rounds

    def lr_at(server_round: int) -> float:
        if server_round <= warmup:
            return base_lr * server_round / warmup
        return base_lr * factor(server_round - warmup, num_rounds - warmup, cfg)

    return lr_at
