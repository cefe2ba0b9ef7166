"""What ``secagg.enabled = true`` refuses in the other sections, naming both keys.

The server sees only the sum of the masked updates, so nothing that reads one node's
update can run: robust rules, the per-reply update-norm bound, the poisoning guard, an
uplink codec (it encodes one node's update in clear), FedNCM's per-class sums,
HetLoRA's ranks (one vector length per round) and the fault modes that corrupt a reply.
The guard is on by default: with secagg its defaults are simply not applied, and only a
guard key set to something other than its default or 0 (off) is refused, since a run
config always carries every key.
"""

from __future__ import annotations

from typing import Any

from .flat import check
from .schema import RunConfig
from .server import GUARD_MODEL_FACTOR, GUARD_ROUND_FACTOR

ON = "with secagg.enabled=true"


def _refuse(ok: bool, key: str, value: Any, why: str) -> None:
    check(ok, key, value, f"{ON}: {why}")


def check_secagg(cfg: RunConfig) -> None:
    """Refuse what SecAgg+ cannot compose with (nothing when it is off).

    Raises
    ------
    ConfigError
        Naming the other key, its value and ``secagg.enabled``.

    """
    if not cfg.secagg.enabled:
        return
    server = cfg.server
    _refuse(server.aggregation == "fedavg", "server.aggregation", server.aggregation,
            "a robust rule reads each update, and the server holds only their sum; use "
            "'fedavg'")  # fmt: skip
    _refuse(server.max_update_norm == 0, "server.max-update-norm", server.max_update_norm,
            "the server cannot measure one update's norm; use 0 (entries are clipped to "
            "secagg.clipping-range on each node)")  # fmt: skip
    _refuse(cfg.comm.uplink == "none", "comm.uplink", cfg.comm.uplink,
            "the masked vector is already quantized; use 'none'")  # fmt: skip
    for key_, value, default in (
        ("server.guard.round-factor", server.guard__round_factor, GUARD_ROUND_FACTOR),
        ("server.guard.model-factor", server.guard__model_factor, GUARD_MODEL_FACTOR),
    ):
        _refuse(value in (0, default), key_, value,
                "the poisoning guard compares each update's norm, which the server never "
                "sees; its defaults are not applied, set it to 0 or leave it")  # fmt: skip
    _refuse(cfg.peft.head.init != "ncm", "peft.head.init", cfg.peft.head.init,
            "FedNCM's per-class feature sums would travel in clear")  # fmt: skip
    ranks = getattr(cfg.peft.params, "ranks", "")
    _refuse(not ranks, "peft.lora.ranks", ranks,
            "every node's masked vector must have one length; HetLoRA's ranks differ")  # fmt: skip
    _refuse(server.clients_per_round != 1, "server.clients-per-round", 1,
            "one node's masked vector, unmasked alone, is its update")  # fmt: skip
    corrupting = sorted({m for m in cfg.fault.by_partition().values()} - {"raise", "sleep"})
    _refuse(not corrupting, "fault.modes", cfg.fault.modes,
            f"{corrupting} corrupt a reply in clear; a masked node can fail ('raise') or "
            "stall ('sleep'), and fault.dropout drops it")  # fmt: skip
    limit = cfg.secagg.max_nodes()
    _refuse(server.clients_per_round <= limit, "server.clients-per-round",
            server.clients_per_round,
            f"the sum of more than {limit} contributions wraps around 2^secagg.modulus-bits "
            f"(secagg.quantization-bits={cfg.secagg.quantization_bits}); raise "
            "secagg.modulus-bits")  # fmt: skip
    _refuse(bool(max_weight(cfg)), "secagg.max-weight", cfg.secagg.max_weight,
            "no bound on a node's example count: set secagg.max-weight, "
            "server.max-num-examples or data.train-size")  # fmt: skip


def max_weight(cfg: RunConfig) -> float:
    """``secagg.max-weight``, else ``server.max-num-examples``, else ``data.train-size``.

    A node's example count is at most the images all nodes share, so the weight's range
    is ``data.train-size`` unless a tighter bound is set; 0 when none is.
    """
    return float(cfg.secagg.max_weight or cfg.server.max_num_examples or cfg.data.train_size)
