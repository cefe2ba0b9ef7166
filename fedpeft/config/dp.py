"""``dp.*`` run-config section: local DP-SGD (Opacus) or central DP (server side)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .flat import check, key

DP_MODES = ("none", "local", "central")
ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class DpConfig:
    """``dp.*``: differential privacy, off by default (``mode = "none"``).

    ``local``: every client runs DP-SGD (per-sample clipping to ``clip_norm``,
    Gaussian noise ``noise_multiplier · clip_norm``, Poisson-sampled batches);
    ε is example-level, per client. ``central``: the server clips each
    client's update to ``clip_norm`` and adds noise to the aggregate; ε is
    client-level. With ``calibrate`` the noise multiplier is found from
    (``epsilon``, ``delta``) over the planned rounds instead.
    """

    mode: str = key("none", "`none`, `local` (DP-SGD on every client, Opacus) or `central` "
                    "(the server clips and noises); see docs/PRIVACY.md")  # fmt: skip
    clip_norm: float = key(1.0, "C: per-sample gradient bound (local) / per-client update "
                           "bound (central)")  # fmt: skip
    noise_multiplier: float = key(1.0, "σ; noise std = σ·C (used when dp.calibrate = false)")
    calibrate: bool = key(False, "find σ from (dp.epsilon, dp.delta) over all planned rounds")
    epsilon: float = key(5.0, "target ε of dp.calibrate (> 0)")
    delta: float = key(1e-5, "δ of every reported ε; keep it below 1/(records protected)")
    accountant: str = key("rdp", "local DP's Opacus accountant, `rdp` or `prv` (central: "
                          "`rdp` only)")  # fmt: skip
    secure_rng: bool = key(False, "noise and Poisson batches from OS entropy instead of the "
                           "run seed")  # fmt: skip

    def __post_init__(self) -> None:
        check(self.mode in DP_MODES, "dp.mode", self.mode, f"valid choices: {list(DP_MODES)}")
        check(
            self.clip_norm > 0 and not math.isnan(self.clip_norm),
            "dp.clip-norm",
            self.clip_norm,
            "the clipping bound C must be > 0 (use a huge value for 'no clipping')",
        )
        check(
            self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier),
            "dp.noise-multiplier",
            self.noise_multiplier,
            "must be a finite number >= 0 (0 = clipping only, no privacy)",
        )
        check(
            self.epsilon > 0 and math.isfinite(self.epsilon),
            "dp.epsilon",
            self.epsilon,
            "the privacy budget ε must be a finite number > 0",
        )
        check(
            math.isfinite(self.clip_norm) or (self.noise_multiplier == 0 and not self.calibrate),
            "dp.clip-norm",
            self.clip_norm,
            "no clipping means unbounded sensitivity: only with dp.noise-multiplier = 0 "
            "and dp.calibrate = false (a no-privacy baseline)",
        )
        check(0 < self.delta < 1, "dp.delta", self.delta, "δ must be in (0, 1)")
        check(
            self.accountant in ACCOUNTANTS,
            "dp.accountant",
            self.accountant,
            f"valid choices: {list(ACCOUNTANTS)} (Opacus accountants)",
        )
        check(
            self.mode != "central" or self.accountant == "rdp",
            "dp.accountant",
            self.accountant,
            "central DP accounts fixed-size client sampling without replacement with "
            "dp-accounting's RDP; use 'rdp'",
        )

    @property
    def enabled(self) -> bool:
        """Whether any DP mechanism runs."""
        return self.mode != "none"
