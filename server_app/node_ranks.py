"""Per-node LoRA ranks on the server (HetLoRA): what each node is sent and must send back.

A node that announced a smaller rank (:mod:`fedpeft.hetlora`) is sent the first
``rank`` components of the global factors and its reply is checked against those
shapes, then zero-padded in the update to the full rank before aggregation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Array, ArrayRecord

from fedpeft.arrays import Arrays
from fedpeft.hetlora import cut_shape, pad, truncate

from .validation import TensorSpec


def specs_at(reference: dict[str, TensorSpec], rank: int | None) -> dict[str, TensorSpec]:
    """The reference specs a rank-``rank`` node's reply must match (``None``: full rank)."""
    if rank is None:
        return reference
    return {k: TensorSpec(cut_shape(k, s.shape, rank), s.dtype) for k, s in reference.items()}


def arrays_at(record: ArrayRecord, rank: int | None) -> ArrayRecord:
    """``record`` as a rank-``rank`` node receives it (``None``: as it is)."""
    if rank is None:
        return record
    cut = truncate({k: v.numpy() for k, v in record.items()}, rank)
    return ArrayRecord({k: Array(v) for k, v in cut.items()})


def sent_at(sent: Arrays | None, rank: int | None) -> Arrays | None:
    """The arrays sent to a rank-``rank`` node, from the full ones sent this round."""
    return sent if sent is None or rank is None else truncate(sent, rank)


def padded(arrays: Arrays, sent: Arrays | None, rank: int | None) -> Arrays | str:
    """A rank-``rank`` reply at full rank (the rest as sent), or why it cannot be."""
    if rank is None:
        return arrays
    if sent is None:
        return f"a rank-{rank} reply cannot be padded without the arrays sent this round"
    return pad(arrays, sent, rank)


def by_rank(
    node_ids: Iterable[int], rank_of: Callable[[int], int | None]
) -> dict[int | None, list[int]]:
    """``node_ids`` grouped by their rank (``rank_of(node)``), in their order."""
    groups: dict[int | None, list[int]] = {}
    for node in node_ids:
        groups.setdefault(rank_of(node), []).append(node)
    return groups
