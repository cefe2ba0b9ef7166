"""``secagg.*`` run-config section: SecAgg+ secure aggregation (:mod:`fedpeft.secagg`).

Off by default. On, the server learns only the sum of the sampled nodes' weighted,
clipped updates (docs/SECAGG.md). The protocol's own checks (:class:`SecAggParams`) run
again each round, once the round's node count is known; these are the ones a start-up
can make without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedpeft.secagg.params import MAX_MODULUS_BITS, MAX_QUANTIZATION_BITS, max_clients

from .flat import check, key

# The defaults: 24 quantization bits under a 32-bit modulus leave 8 bits of headroom for
# the sum, so a round may sum up to 256 contributions, and a masked vector travels as
# uint32 (as many bytes as the fp32 update).


@dataclass(frozen=True)
class SecAggConfig:
    """``secagg.*``: whether SecAgg+ runs, its neighbourhoods and its quantization."""

    enabled: bool = key(False, "SecAgg+ (Bell et al. 2020): the server sums the masked, "
                        "weighted, clipped updates and never sees one alone; refuses robust "
                        "rules, server.max-update-norm, comm.uplink codecs and a non-default "
                        "poisoning guard (docs/SECAGG.md)")  # fmt: skip
    num_shares: int = key(0, "nodes in each node's neighbourhood, itself included (an odd "
                          "number >= 3 when below the round's sampled nodes); 0 = every "
                          "sampled node")  # fmt: skip
    threshold: int = key(0, "shares that reconstruct a node's secret, > num-shares / 2; "
                         "0 = the smallest majority, num-shares // 2 + 1, which tolerates "
                         "the most drop-outs")  # fmt: skip
    clipping_range: float = key(1.0, "each entry of a node's update (trained - received) is "
                                "clipped to [-this, this] before quantization")  # fmt: skip
    quantization_bits: int = key(24, "bits of each quantized entry of weight x update; the "
                                 "sum of a round's contributions must fit "
                                 "secagg.modulus-bits")  # fmt: skip
    modulus_bits: int = key(32, "masks and masked vectors live modulo 2^this (32: uint32 on "
                            "the wire; a round sums up to 2^(modulus - quantization) - 1 "
                            "nodes)")  # fmt: skip
    max_weight: float = key(0.0, "the largest weight (example count) a node contributes; "
                            "a node with more is counted at this; 0 = "
                            "server.max-num-examples, else data.train-size")  # fmt: skip

    def __post_init__(self) -> None:
        shares = self.num_shares
        check(shares == 0 or (shares >= 3 and shares % 2 == 1), "secagg.num-shares", shares,
              "must be 0 (every sampled node) or an odd number >= 3 (a node and the same "
              "count of nodes either side of it on a ring)")  # fmt: skip
        check(self.threshold >= 0, "secagg.threshold", self.threshold,
              "must be >= 0 (0 = num-shares // 2 + 1)")  # fmt: skip
        if shares and self.threshold:
            check(shares / 2 < self.threshold <= shares, "secagg.threshold", self.threshold,
                  f"must be in (secagg.num-shares / 2, secagg.num-shares] = ({shares / 2}, "
                  f"{shares}]: at or below half, a server asking half a neighbourhood for "
                  "one secret and half for the other learns both")  # fmt: skip
        elif self.threshold:
            check(self.threshold >= 2, "secagg.threshold", self.threshold,
                  "must be >= 2 (1 hands every neighbour the secret itself)")  # fmt: skip
        rng = self.clipping_range
        check(0 < rng < math.inf, "secagg.clipping-range", rng, "must be a finite number > 0")
        qb, mb = self.quantization_bits, self.modulus_bits
        check(1 <= qb <= MAX_QUANTIZATION_BITS, "secagg.quantization-bits", qb,
              f"must be in [1, {MAX_QUANTIZATION_BITS}]")  # fmt: skip
        check(1 <= mb <= MAX_MODULUS_BITS, "secagg.modulus-bits", mb,
              f"must be in [1, {MAX_MODULUS_BITS}]")  # fmt: skip
        check(mb > qb, "secagg.modulus-bits", mb,
              f"must exceed secagg.quantization-bits={qb}: the sum of two or more "
              "contributions would wrap around")  # fmt: skip
        check(0 <= self.max_weight < math.inf, "secagg.max-weight", self.max_weight,
              "must be a finite number >= 0 (0 = derived)")  # fmt: skip

    def max_nodes(self) -> int:
        """The most contributions a round may sum without wrapping around the modulus."""
        return max_clients(self.quantization_bits, self.modulus_bits)
