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
from typing import Protocol

from .registry import Registry


class ScheduleSettings(Protocol):
    """The ``train.*`` keys read here; :class:`fedpeft.config.TrainConfig` is the one.

    A protocol, not the config class: the config package imports :data:`SCHEDULES` to
    validate ``train.lr-schedule``, so this module does not import it back.
    """

    @property
    def lr_schedule(self) -> str: ...
    @property
    def warmup_rounds(self) -> int: ...
    @property
    def lr_gamma(self) -> float: ...
    @property
    def lr_step_rounds(self) -> int: ...


Factor = Callable[[int, int, ScheduleSettings], float]
SCHEDULES: Registry[Factor] = Registry("learning-rate schedule")


@SCHEDULES.register("constant")
def constant(k: int, total: int, cfg: ScheduleSettings) -> float:
    """The same lr every round."""
    return 1.0


@SCHEDULES.register("cosine")
def cosine(k: int, total: int, cfg: ScheduleSettings) -> float:
    """Half a cosine from 1 at the first round towards 0 after the last (never 0)."""
    return 0.5 * (1.0 + math.cos(math.pi * (k - 1) / max(total, 1)))


@SCHEDULES.register("step")
def step(k: int, total: int, cfg: ScheduleSettings) -> float:
    """Times ``train.lr-gamma`` every ``train.lr-step-rounds`` rounds."""
    return cfg.lr_gamma ** ((k - 1) // cfg.lr_step_rounds)


def lr_schedule(cfg: ScheduleSettings, base_lr: float, num_rounds: int) -> Callable[[int], float]:
    """Round → the lr the server sends that round."""
    factor = SCHEDULES.get(cfg.lr_schedule, "train.lr-schedule")
    warmup = cfg.warmup_rounds

    def lr_at(server_round: int) -> float:
        if server_round <= warmup:
            return base_lr * server_round / warmup
        return base_lr * factor(server_round - warmup, num_rounds - warmup, cfg)

    return lr_at
