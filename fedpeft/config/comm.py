"""``comm.*`` run-config section: how the trainable arrays travel (:mod:`fedpeft.wire`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .flat import check, check_choices, key

if TYPE_CHECKING:
    from fedpeft.codecs import Codec

FEEDBACK = ("auto", "on", "off")


def _codecs() -> Any:
    from fedpeft.codecs import CODECS

    return CODECS


@dataclass(frozen=True)
class CommConfig:
    """``comm.*``: the codec of each direction and its parameters (fp32 by default)."""

    uplink: str = key("none", "codec of the replies: `none` sends the fp32 weights; any other "
                      "sends the update (trained − received), decoded and checked by the server "
                      "before the usual checks", choices=_codecs)  # fmt: skip
    downlink: str = key("none", "codec of the global weights sent to clients: `none`, `fp16` "
                        "or `bf16` (int8 / topk are for updates; see docs/COMPRESSION.md)",
                        choices=_codecs)  # fmt: skip
    int8_block: int = key(0, "int8: values per absmax scale; 0 = one scale per tensor")
    topk_fraction: float = key(0.1, "topk: fraction of each tensor's entries sent (the largest "
                               "|values|, at least one), in (0, 1]")  # fmt: skip
    error_feedback: str = key("auto", "keep what the uplink codec lost on the client "
                              "(Context.state) and add it to the next update: `auto` (on for "
                              "int8 and topk), `on`, `off`")  # fmt: skip

    def __post_init__(self) -> None:
        check_choices(self, "comm.")
        from fedpeft.codecs import CODECS

        check(CODECS[self.downlink].absolute, "comm.downlink", self.downlink,
              "int8 and topk are update codecs; the downlink sends the global weights, and "
              "sending each client the change since what it last received would need a copy "
              "per client on both sides; use 'none', 'fp16' or 'bf16'")  # fmt: skip
        check(self.int8_block >= 0, "comm.int8-block", self.int8_block, "must be >= 0")
        check(0 < self.topk_fraction <= 1 and math.isfinite(self.topk_fraction),
              "comm.topk-fraction", self.topk_fraction, "must be in (0, 1]")  # fmt: skip
        check(self.error_feedback in FEEDBACK, "comm.error-feedback", self.error_feedback,
              f"valid choices: {list(FEEDBACK)}")  # fmt: skip

    def codec(self, direction: str) -> Codec:
        """The codec of ``direction`` (``"uplink"`` / ``"downlink"``) these keys configure."""
        from fedpeft.codecs import CODECS, CodecParams

        params = CodecParams(self.int8_block, self.topk_fraction)
        return CODECS.get(getattr(self, direction), f"comm.{direction}")(params)

    @property
    def feedback(self) -> bool:
        """Whether the uplink keeps an error-feedback residual."""
        from fedpeft.codecs import CODECS

        if not CODECS[self.uplink].encodes or self.error_feedback == "off":
            return False
        return self.error_feedback == "on" or CODECS[self.uplink].feedback_by_default
