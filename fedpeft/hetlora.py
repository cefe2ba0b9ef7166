"""HetLoRA: nodes that train a smaller LoRA rank than the run's ``peft.lora.r``.

A node's rank is its node-config ``lora-rank``, else its partition's entry in
``peft.lora.ranks`` (the simulation's stand-in: every simulated node has the same
node-config), else ``r``. The node announces it in its query reply; the server sends
it the first ``rank`` components of the global factors (:func:`truncate`: A's first
rows, B's first columns) and checks its reply against those shapes. Before
aggregation the reply is zero-padded *in the update* (:func:`pad`): the components
the node does not train carry the global value it was not sent, so every aggregation
rule, central DP's clipping and the server optimizers see full-rank arrays, and under
FedAvg (sample-weighted) a component moves by the mean update of the nodes that train
it, times their share of the round's samples. HetLoRA's own rule (Cho et al., 2024)
weights by each node's ‖BA‖ and prunes ranks; that weighting is not implemented.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .arrays import Arrays
from .config import NodeConfig, PeftConfig

# The LoRA factor → the axis that holds its rank: A is (r, in), B is (out, r).
RANK_AXIS = {"lora_A": 0, "lora_B": 1}


def rank_axis(name: str) -> int | None:
    """The axis of ``name`` that holds the LoRA rank, or ``None`` (not a LoRA factor)."""
    for factor, axis in RANK_AXIS.items():
        if f".{factor}." in name:
            return axis
    return None


def cut_shape(name: str, shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """``shape`` of tensor ``name`` at ``rank`` (unchanged unless it is a LoRA factor)."""
    axis = rank_axis(name)
    if axis is None:
        return shape
    return tuple(rank if i == axis else n for i, n in enumerate(shape))


def _slots(name: str, rank: int) -> tuple[slice, ...]:
    axis = rank_axis(name)
    return () if axis is None else (slice(None),) * axis + (slice(0, rank),)


def truncate(arrays: Mapping[str, np.ndarray], rank: int) -> Arrays:
    """Each LoRA factor's first ``rank`` components (contiguous copies); others as they are."""
    return {k: np.ascontiguousarray(v[_slots(k, rank)]) for k, v in arrays.items()}


def pad(part: Mapping[str, np.ndarray], full: Mapping[str, np.ndarray], rank: int) -> Arrays:
    """``full`` with ``part`` (a rank-``rank`` reply) in its first ``rank`` components.

    ``truncate(pad(part, full, rank), rank)`` is ``part`` and ``pad(truncate(full, rank),
    full, rank)`` is ``full``, bit for bit.
    """
    padded = {}
    for key, value in part.items():
        out = np.array(full[key], copy=True)
        out[_slots(key, rank)] = value
        padded[key] = out
    return padded


def node_rank(pcfg: PeftConfig, node: NodeConfig) -> int | None:
    """The LoRA rank ``node`` trains, or ``None`` (the run's ``r``, or not LoRA).

    Its node-config's ``lora-rank``, else its partition's entry in ``peft.lora.ranks``;
    other methods than LoRA ignore both.

    Raises
    ------
    ValueError
        If ``lora-rank`` is above ``peft.lora.r``.

    """
    if pcfg.method != "lora":
        return None
    params = pcfg.params
    if node.lora_rank is not None:
        rank = params.check_rank(node.lora_rank, "node-config lora-rank")
    elif (ranks := params.rank_list()) and node.partition_id is not None:
        rank = ranks[node.partition_id % len(ranks)]
    else:
        return None
    return None if rank == params.r else rank
