"""Central (client-level) DP on the server: clip each update, noise the sum, account.

Flower's ``DifferentialPrivacyServerSideFixedClipping`` is not used: its
accountant refuses a strategy whose ``aggregate_train`` is not FedAvg's, and it
skips aggregation when any reply is an error, so one dropped client would cost
a round. This does the same mechanism after :mod:`server_app.validation` has
accepted the replies:

    new = sent + (Σ_i clip_C(reply_i − sent) + N(0, σ²C²·I)) / m

with ``m`` the number of clients *sampled* (public, fixed before replies
arrive), so the noise on the mean has std ``σ·C/m``. A dropped or rejected
client contributes a zero update; the denominator does not change. Weights
(``num-examples``) are ignored: a weighted mean would have a larger, data-
dependent sensitivity. Each release is the Gaussian mechanism on ``m`` clients
sampled without replacement from the ``N`` connected, composed by
:mod:`server_app.central_accounting` (replace-one adjacency). What that does and
does not guarantee: docs/PRIVACY.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from fedpeft.aggregation import Aggregator, Update
from fedpeft.arrays import Arrays
from fedpeft.config import DpConfig

from . import central_accounting
from .central_accounting import Release

log = logging.getLogger(__name__)


def clip(update: Arrays, sent: Arrays, clip_norm: float) -> tuple[Arrays, float]:
    """``update − sent`` scaled to L2 norm at most ``clip_norm`` (float64), and its norm."""
    delta = {k: update[k].astype(np.float64) - sent[k].astype(np.float64) for k in sent}
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in delta.values()))
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {k: d * factor for k, d in delta.items()}, norm


@dataclass
class CentralDp(Aggregator):
    """Server-side clipping, Gaussian noise and accounting; one instance per run.

    The aggregation rule of ``dp.mode = "central"``: its state (the releases) goes into
    the checkpoint under ``central_dp``.
    """

    state_key: ClassVar[str] = "central_dp"

    cfg: DpConfig
    num_rounds: int
    seed: int
    releases: list[Release] = field(default_factory=list)
    sigma: float | None = None

    def __post_init__(self) -> None:
        if not self.cfg.calibrate:
            self.sigma = self.cfg.noise_multiplier

    def noise_multiplier(self, sampled: int, population: int) -> float:
        """σ: configured, or calibrated once (first release's m of N) over all planned rounds."""
        if self.sigma is None:
            self.sigma = central_accounting.calibrate(
                self.cfg.epsilon, self.cfg.delta, sampled, population, self.num_rounds
            )
        return self.sigma

    def rng(self, server_round: int) -> np.random.Generator:
        """Noise source: OS entropy with ``dp.secure-rng``, else seeded by (seed, round)."""
        if self.cfg.secure_rng:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, server_round, 0xD9])

    def aggregate(
        self, updates: list[Update], sent: Arrays | None, num_sampled: int, population: int,
        server_round: int,
    ) -> tuple[Arrays, dict[str, float | int]]:  # fmt: skip
        """The noisy clipped mean, applied to ``sent``; ε is composed for this release."""
        if sent is None:
            raise ValueError(f"central DP: no arrays were sent in round {server_round}")
        total = {k: np.zeros(v.shape, dtype=np.float64) for k, v in sent.items()}
        clipped = 0
        for update in updates:  # partition-id order: the float sum is reproducible
            delta, norm = clip(update.arrays, sent, self.cfg.clip_norm)
            clipped += norm > self.cfg.clip_norm
            for k in total:
                total[k] += delta[k]
        return self.release(total, sent, num_sampled, population, server_round, int(clipped))

    def release(
        self, total: Arrays, sent: Arrays, num_sampled: int, population: int, server_round: int,
        clipped: int | None = None,
    ) -> tuple[Arrays, dict[str, float | int]]:  # fmt: skip
        """``sent`` plus the noisy mean of ``total``, the sum of clipped updates.

        ``clipped``: how many were clipped (``None``: unknown, as under SecAgg+, where the
        nodes clip and the server holds only the sum).
        """
        population = max(population, num_sampled)
        rate = num_sampled / population
        sigma = self.noise_multiplier(num_sampled, population)
        gen, std = self.rng(server_round), sigma * self.cfg.clip_norm
        out = {}
        for k, v in sent.items():  # fixed key order: seeded noise is reproducible
            noisy = total[k] + (gen.normal(0.0, std, size=v.shape) if std > 0 else 0.0)
            out[k] = (v.astype(np.float64) + noisy / num_sampled).astype(v.dtype)
        self.releases.append(Release(sigma, num_sampled, population))
        info = {
            "dp_epsilon": central_accounting.epsilon(self.releases, self.cfg.delta),
            "dp_delta": self.cfg.delta,
            "dp_noise_multiplier": sigma,
            "dp_noise_std": std / num_sampled,
            "dp_sample_rate": rate,
            "dp_releases": len(self.releases),
        }
        if clipped is not None:
            info["dp_clipped"] = clipped
        log.info(
            "round %d: central DP, %s updates clipped to C=%g, noise std %.4g on the "
            "mean (σ=%.4f, q=%.4g); ε=%.4f at δ=%g so far",
            server_round, "?" if clipped is None else clipped, self.cfg.clip_norm,
            std / num_sampled, sigma, rate, info["dp_epsilon"], self.cfg.delta,
        )  # fmt: skip
        return out, info

    def idle(self) -> dict[str, float | int]:
        """A failed round released nothing: ε so far."""
        return self.spent()

    def spent(self) -> dict[str, float | int]:
        """ε so far and the number of releases (for a round that released nothing)."""
        return {
            "dp_epsilon": central_accounting.epsilon(self.releases, self.cfg.delta),
            "dp_releases": len(self.releases),
        }

    def state(self) -> dict[str, object]:
        """JSON-able releases ``[σ, m, N]`` and σ, for the checkpoint."""
        releases = [[r.sigma, r.sampled, r.population] for r in self.releases]
        return {"releases": releases, "sigma": self.sigma}

    def load_state(self, state: dict[str, object]) -> None:
        """Restore :meth:`state`; refuse an older checkpoint's Poisson-approximation history."""
        if "history" in state:
            raise ValueError(
                "the checkpoint's central-DP accounting is an older format (Poisson q = m/N "
                "approximation) and cannot be continued; start a new run"
            )
        self.releases = [
            Release(float(n), int(m), int(p))
            for n, m, p in state.get("releases", [])  # type: ignore[attr-defined]
        ]
        if state.get("sigma") is not None:
            self.sigma = float(state["sigma"])  # type: ignore[arg-type]
