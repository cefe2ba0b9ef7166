"""Client-level accounting for central DP, for the sampling the server actually does.

The server samples exactly ``m`` of the ``N`` connected clients each round, without
replacement (:mod:`server_app.sampling`); ``N`` is public. The analysis that fits is
*replace-one* adjacency (one client's data swapped for another's, ``N`` fixed) with the
sampled Gaussian mechanism without replacement (Wang, Balle, Kasiviswanathan,
AISTATS 2019, Thm. 27), which Google's ``dp-accounting`` computes
(``SampledWithoutReplacementDpEvent`` in its ``RdpAccountant``). Under replace-one, the
clipped sum moves by up to ``2C`` (one update of norm ``C`` swapped for another), so a
release with noise std ``σC`` is a Gaussian event of noise multiplier ``σ/2``.

Flower's own ``flwr.supercore.privacy_accounting.RdpAccountant`` wraps the same backend
but fixes ``N`` when it is built (our ``N`` is the nodes connected in each round) and takes
the noise multiplier as given (its ``DifferentialPrivacyServerSideFixedClipping`` passes
``σ`` for a ``2C``-sensitive sum under replace-one); so the events are composed here.

The whole state is the list of releases ``(σ, m, N)``; ε is recomputed from it, so it is
cumulative and survives a checkpoint as JSON.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

# dp-accounting is imported where it is used: every ServerApp imports this module (the
# strategy knows the central-DP rule), but only a central-DP run needs it (~1 s of imports).
if TYPE_CHECKING:
    from dp_accounting import dp_event, rdp

log = logging.getLogger(__name__)

# Replace-one sensitivity of a sum of updates clipped to C, in units of C.
REPLACE_ONE_SENSITIVITY = 2.0


@dataclass(frozen=True)
class Release:
    """One noisy aggregate: noise multiplier σ (std σC), ``sampled`` of ``population``."""

    sigma: float
    sampled: int
    population: int

    def __post_init__(self) -> None:
        if not 0 < self.sampled <= self.population:
            raise ValueError(f"need 0 < sampled <= population, got {self.sampled} of "
                             f"{self.population}")  # fmt: skip
        if not self.sigma >= 0:
            raise ValueError(f"noise multiplier must be >= 0, got {self.sigma}")

    def event(self) -> dp_event.DpEvent:
        """The release as a ``dp-accounting`` event (σ/2: replace-one sensitivity 2C)."""
        from dp_accounting import dp_event

        gaussian = dp_event.GaussianDpEvent(self.sigma / REPLACE_ONE_SENSITIVITY)
        return dp_event.SampledWithoutReplacementDpEvent(self.population, self.sampled, gaussian)


def _fresh() -> rdp.RdpAccountant:
    from dp_accounting import rdp
    from dp_accounting.privacy_accountant import NeighboringRelation

    return rdp.RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)


def epsilon(releases: list[Release], delta: float) -> float:
    """Cumulative ε at ``delta`` over ``releases``: 0 before any, inf with a noiseless one."""
    if not releases:
        return 0.0
    if any(r.sigma == 0 for r in releases):
        return math.inf
    accountant = _fresh()
    for release, count in Counter(releases).items():  # rounds alike compose as one event
        accountant.compose(release.event(), count)
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def calibrate(target_epsilon: float, delta: float, sampled: int, population: int,
              releases: int) -> float:  # fmt: skip
    """Smallest σ whose ε after ``releases`` releases of ``sampled``/``population`` is <= target.

    ``dp-accounting``'s calibration (Brent's method, σ within 1e-6); the returned σ meets
    the target.
    """
    from dp_accounting import dp_event, mechanism_calibration

    Release(1.0, sampled, population)  # checks m and N before the search

    def make_event(sigma: float) -> dp_event.DpEvent:
        return dp_event.SelfComposedDpEvent(Release(sigma, sampled, population).event(), releases)

    sigma = float(
        mechanism_calibration.calibrate_dp_mechanism(
            _fresh, make_event, target_epsilon, delta,
            mechanism_calibration.LowerEndpointAndGuess(1e-2, 1.0),
        )
    )  # fmt: skip
    log.info(
        "central DP calibration: σ = %.4f for ε=%g at δ=%g over %d releases of %d of %d "
        "clients (sampling without replacement, replace-one)",
        sigma, target_epsilon, delta, releases, sampled, population,
    )  # fmt: skip
    return sigma
