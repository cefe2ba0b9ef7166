"""The SecAgg+ parameters every node and the server agree on, and their checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from fedpeft import protocol

# Above 48 bits a value near the top of the quantization range keeps fewer than 5 bits of
# fraction in a float64 (53-bit significand), and stochastic rounding has nothing left to
# round: its unbiasedness is only as good as those fraction bits.
MAX_QUANTIZATION_BITS = 48
# The masked vectors are numpy unsigned integers; arithmetic wraps modulo 2^64, which 2^m
# divides for every m <= 64, so uint64 sums reduce correctly modulo 2^m.
MAX_MODULUS_BITS = 64

_CONFIG_KEYS = {
    "num_clients": protocol.SECAGG_NUM_CLIENTS,
    "num_shares": protocol.SECAGG_NUM_SHARES,
    "threshold": protocol.SECAGG_THRESHOLD,
    "clipping_range": protocol.SECAGG_CLIPPING_RANGE,
    "quantization_bits": protocol.SECAGG_QUANTIZATION_BITS,
    "modulus_bits": protocol.SECAGG_MODULUS_BITS,
    "max_weight": protocol.SECAGG_MAX_WEIGHT,
}


def max_clients(quantization_bits: int, modulus_bits: int) -> int:
    """The most contributions of up to ``2**quantization_bits - 1`` per entry whose sum
    stays below ``2**modulus_bits`` (beyond it, the unmasked sum wraps around).
    """  # noqa: D205
    return ((1 << modulus_bits) - 1) // ((1 << quantization_bits) - 1)


def _bad(name: str, value: object, need: str) -> ValueError:
    return ValueError(f"SecAgg+ parameter {name} must be {need}; got {value!r}")


@dataclass(frozen=True)
class SecAggParams:
    """The protocol's parameters.

    Attributes
    ----------
    num_clients : int
        The most masked vectors the server sums (the round's sampled nodes).
    num_shares : int
        The size of a node's neighbourhood, the node itself included: each node splits
        its mask seed and its mask key into this many Shamir shares, one per neighbour.
    threshold : int
        The shares needed to reconstruct a secret.
    clipping_range : float
        Update entries are clipped to ``[-clipping_range, clipping_range]``.
    quantization_bits : int
        A contribution's entries are quantized to ``[0, 2**quantization_bits - 1]``.
    modulus_bits : int
        Masks and masked vectors live in ``[0, 2**modulus_bits)``.
    max_weight : float
        The largest weight (e.g. example count) a node may contribute.

    """

    num_clients: int
    num_shares: int
    threshold: int
    clipping_range: float = 8.0
    quantization_bits: int = 22
    modulus_bits: int = 32
    max_weight: float = 1000.0

    def __post_init__(self) -> None:
        """Check the parameters.

        Raises
        ------
        ValueError
            Naming the first parameter out of range and its value.

        """
        ints = ("num_clients", "num_shares", "threshold", "quantization_bits", "modulus_bits")
        for name in ints:
            if not protocol.is_int(getattr(self, name)):
                raise _bad(name, getattr(self, name), "an int")
        for name in ("clipping_range", "max_weight"):
            if not protocol.is_finite_positive(getattr(self, name)):
                raise _bad(name, getattr(self, name), "a finite number > 0")
        # One node's masked vector, unmasked alone, is that node's update.
        if self.num_clients < 2:
            raise _bad("num_clients", self.num_clients, ">= 2")
        if not 2 <= self.num_shares <= self.num_clients:
            raise _bad("num_shares", self.num_shares, f"in [2, num_clients={self.num_clients}]")
        # Below num_clients a neighbourhood is a node and the same count of nodes either side
        # of it on a ring (a Harary graph), an odd count.
        if self.num_shares < self.num_clients and self.num_shares % 2 == 0:
            raise _bad(
                "num_shares", self.num_shares, f"odd when below num_clients={self.num_clients}"
            )
        # A threshold of 1 hands every neighbour the secret itself; above num_shares no
        # secret is ever reconstructed.
        if not 2 <= self.threshold <= self.num_shares:
            raise _bad("threshold", self.threshold, f"in [2, num_shares={self.num_shares}]")
        # Each neighbour reveals one of a node's two secrets (its mask seed if the server
        # lists the node active, its mask key if dropped), so a server that tells half the
        # neighbourhood one and half the other gets both unless 2 * threshold > num_shares.
        if 2 * self.threshold <= self.num_shares:
            raise _bad("threshold", self.threshold, f"> num_shares / 2 = {self.num_shares / 2}")
        if not 1 <= self.quantization_bits <= MAX_QUANTIZATION_BITS:
            raise _bad(
                "quantization_bits", self.quantization_bits, f"in [1, {MAX_QUANTIZATION_BITS}]"
            )
        if not 1 <= self.modulus_bits <= MAX_MODULUS_BITS:
            raise _bad("modulus_bits", self.modulus_bits, f"in [1, {MAX_MODULUS_BITS}]")
        if self.num_clients > max_clients(self.quantization_bits, self.modulus_bits):
            need = (self.num_clients * self.quantization_max).bit_length()
            raise _bad(
                "modulus_bits",
                self.modulus_bits,
                f">= {need} for num_clients={self.num_clients} contributions of up to "
                f"2**quantization_bits - 1 = {self.quantization_max} each",
            )

    @property
    def quantization_max(self) -> int:
        """The largest quantized value of one entry: ``2**quantization_bits - 1``."""
        return (1 << self.quantization_bits) - 1

    @property
    def modulus(self) -> int:
        """``2**modulus_bits``."""
        return 1 << self.modulus_bits

    @property
    def dtype(self) -> np.dtype:
        """The narrowest unsigned numpy dtype a masked vector's entries fit."""
        width = 8
        while width < self.modulus_bits:
            width *= 2
        return np.dtype(f"uint{width}")

    def to_config(self) -> dict[str, int | float]:
        """The parameters keyed by their protocol names (a ConfigRecord's values)."""
        return {_CONFIG_KEYS[k]: v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> SecAggParams:
        """The parameters from :meth:`to_config`'s mapping (extra keys are ignored).

        Raises
        ------
        ValueError
            When a key is missing or a value is out of range.

        """
        missing = [key for key in _CONFIG_KEYS.values() if key not in config]
        if missing:
            raise ValueError(f"SecAgg+ parameters missing: {missing}")
        values = {name: config[key] for name, key in _CONFIG_KEYS.items()}
        for name in ("clipping_range", "max_weight"):
            if protocol.is_int(values[name]):
                values[name] = float(values[name])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]
