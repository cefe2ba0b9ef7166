"""Nodes running the SecAgg+ stages in one process, each node's state kept in a ConfigRecord
between stages, through its protobuf form (as a ClientApp keeps it in Context.state, which
crosses a process boundary when the ClientApp runs isolated)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ConfigRecord
from flwr.common.serde import config_record_from_proto, config_record_to_proto

from fedpeft.secagg import SecAggParams, client, encoding, graph
from fedpeft.secagg.state import from_record, to_record

# clip 1, max weight 10, 20-bit quantization, 32-bit modulus: 5 x (2^20 - 1) < 2^32
PARAMS = SecAggParams(
    num_clients=5, num_shares=5, threshold=3, clipping_range=1.0, quantization_bits=20,
    modulus_bits=32, max_weight=10.0,
)  # fmt: skip


def rounding_rng(node: int) -> np.random.Generator:
    """The stochastic rounding's generator of ``node`` (the same one each call)."""
    return np.random.default_rng(node % 2**32)


class Federation:
    """``n`` nodes with random uint64 ids, random updates of ``size`` and random weights."""

    def __init__(self, params: SecAggParams, n: int, size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params, self.size = params, size
        self.ids = [int(i) for i in rng.integers(0, 2**64, size=n, dtype=np.uint64)]
        assert len(set(self.ids)) == n
        self.updates = {i: 2 * rng.standard_normal(size) for i in self.ids}  # some clipped
        self.weights = {i: float(rng.uniform(0, params.max_weight)) for i in self.ids}
        self.records: dict[int, ConfigRecord] = {}
        self.graph_rng = np.random.default_rng(seed + 1)

    def stage(self, node: int, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one stage of ``node`` on its state, kept as a (serialised) ConfigRecord."""
        state = from_record(self.records.get(node, ConfigRecord()))
        out = fn(state, *args)
        self.records[node] = config_record_from_proto(config_record_to_proto(to_record(state)))
        return out

    def setup(self) -> dict[int, tuple[bytes, bytes]]:
        return {i: self.stage(i, client.setup, self.params, i) for i in self.ids}

    def share_keys(
        self, public_keys: dict[int, tuple[bytes, bytes]], nodes: Iterable[int]
    ) -> dict[int, dict[int, bytes]]:
        hoods = graph.neighbourhoods(public_keys, self.params, self.graph_rng)
        self.hoods = hoods
        return {
            i: self.stage(i, client.share_keys, {j: public_keys[j] for j in hoods[i]})
            for i in nodes
        }

    def masked(
        self, routed: dict[int, dict[int, bytes]], nodes: Iterable[int]
    ) -> dict[int, np.ndarray]:
        return {
            i: self.stage(
                i, client.masked_vector, routed[i], self.updates[i], self.weights[i],
                rounding_rng(i),
            )
            for i in nodes
        }  # fmt: skip

    def unmask(
        self, requests: dict[int, tuple[list[int], list[int]]], nodes: Iterable[int]
    ) -> dict[int, tuple[list[int], list[bytes]]]:
        return {i: self.stage(i, client.unmask, *requests[i]) for i in nodes}

    def run(
        self,
        drop_in_share_keys: Iterable[int] = (),
        drop_after_share_keys: Iterable[int] = (),
        drop_in_unmask: Iterable[int] = (),
    ) -> dict[str, Any]:
        """All four stages; the named nodes send no reply from that stage on."""
        public_keys = self.setup()
        sharing = [i for i in self.ids if i not in set(drop_in_share_keys)]
        routed = graph.route(self.share_keys(public_keys, sharing))
        masking = [i for i in sharing if i not in set(drop_after_share_keys)]
        masked = self.masked(routed, masking)
        requests = graph.unmask_requests(routed, masked)
        replies = self.unmask(requests, [i for i in masking if i not in set(drop_in_unmask)])
        return {
            "public_keys": public_keys, "routed": routed, "masked": masked, "replies": replies,
            "params": self.params, "size": self.size,
        }  # fmt: skip

    def encoded(self, nodes: Iterable[int]) -> np.ndarray:
        """The exact sum of the named nodes' quantized contributions, modulo 2^m."""
        total = np.zeros(self.size + 1, dtype=np.uint64)
        for i in nodes:
            contribution = encoding.encode(
                self.params, self.updates[i], self.weights[i], rounding_rng(i)
            )
            total = (total + contribution) & np.uint64(self.params.modulus - 1)
        return total

    def plaintext(self, nodes: Iterable[int]) -> tuple[np.ndarray, float]:
        """The named nodes' sum of ``weight * clip(update)`` and of weights, in float64."""
        clip = self.params.clipping_range
        nodes = list(nodes)
        vector = sum(self.weights[i] * np.clip(self.updates[i], -clip, clip) for i in nodes)
        return np.asarray(vector), sum(self.weights[i] for i in nodes)
