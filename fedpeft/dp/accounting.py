"""Local DP's privacy accounting with Opacus's accountants, persisted as a ConfigRecord.

An accountant's whole state is its ``history``: a list of (noise multiplier,
sample rate, steps). It travels across rounds in a client's ``Context.state`` as a
:class:`~flwr.app.ConfigRecord` of three parallel lists, so ε is always
recomputed by Opacus from every step so far (cumulative, never per round).
Central DP's accounting (sampling without replacement) is
:mod:`server_app.central_accounting`.
"""

from __future__ import annotations

import functools
import logging
import math

from flwr.app import ConfigRecord
from opacus.accountants import IAccountant, create_accountant
from opacus.accountants.utils import get_noise_multiplier

log = logging.getLogger(__name__)

# Relative tolerance of get_noise_multiplier's search (the ε it hits is <= target).
EPSILON_TOLERANCE = 0.01


def new_accountant(name: str) -> IAccountant:
    """An empty Opacus accountant (``"rdp"`` or ``"prv"``)."""
    return create_accountant(mechanism=name)


def to_record(accountant: IAccountant) -> ConfigRecord:
    """The accountant's history as a ConfigRecord (``noise``, ``rate``, ``steps`` lists)."""
    history = list(accountant.history)
    return ConfigRecord(
        {
            "mechanism": accountant.mechanism(),
            "noise": [float(h[0]) for h in history],
            "rate": [float(h[1]) for h in history],
            "steps": [int(h[2]) for h in history],
        }
    )


def from_record(record: ConfigRecord | None, name: str) -> IAccountant:
    """Rebuild an accountant from :func:`to_record`'s output (empty if ``record`` is None)."""
    accountant = new_accountant(name)
    if record is None:
        return accountant
    if record["mechanism"] != name:
        raise ValueError(
            f"stored accountant is {record['mechanism']!r}, run config asks for {name!r}"
        )
    accountant.history = [
        (float(n), float(q), int(s))
        for n, q, s in zip(record["noise"], record["rate"], record["steps"], strict=True)
    ]
    return accountant


def total_steps(accountant: IAccountant) -> int:
    """Number of noisy steps (local DP) or releases (central DP) composed so far."""
    return sum(int(h[2]) for h in accountant.history)


def epsilon(accountant: IAccountant, delta: float) -> float:
    """ε spent so far at ``delta``: 0 before any step, inf for a noiseless step."""
    if not accountant.history:
        return 0.0
    if any(float(h[0]) == 0.0 for h in accountant.history):
        return math.inf
    return float(accountant.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=64)
def calibrate(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, name: str
) -> float:
    """Smallest noise multiplier (to 1%) whose ε after ``steps`` steps is <= the target."""
    sigma = float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=name,
            epsilon_tolerance=EPSILON_TOLERANCE,
        )
    )
    log.info(
        "DP calibration: noise multiplier %.4f for ε=%g at δ=%g over %d steps at q=%.4g",
        sigma, target_epsilon, delta, steps, sample_rate,
    )  # fmt: skip
    return sigma
