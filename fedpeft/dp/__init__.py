"""Differential privacy: Opacus DP-SGD on clients, accounting, central-DP helpers.

Opacus and dp-accounting are imported by the submodules only, so a run without DP
never loads them (about 1.5 s of imports in each ServerApp and ClientApp process).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def warn_delta(delta: float, num_examples: int, who: str) -> None:
    """Log a warning when δ >= 1/(number of records protected)."""
    if num_examples > 0 and delta >= 1.0 / num_examples:
        log.warning(
            "%s: dp.delta=%g is >= 1/%d (its number of records): such a δ allows "
            "releasing a record outright; use δ well below 1/%d",
            who, delta, num_examples, num_examples,
        )  # fmt: skip
