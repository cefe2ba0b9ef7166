"""The server's side of SecAgg+: the sum of the survivors' contributions, masks removed.

The server sums the survivors' masked vectors, reconstructs each survivor's private mask
seed and each dropped node's mask key ``sk2`` from the shares the survivors return, and
takes the masks off, as Flower's ``SecAggPlusWorkflow.unmask_stage`` does. The pairwise
masks between two survivors cancel in the sum; those a survivor shares with a dropped node
do not, and come off through the dropped node's ``sk2``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from fedpeft.secagg import crypto, encoding, shares
from fedpeft.secagg.errors import SecAggError
from fedpeft.secagg.graph import mask_partners
from fedpeft.secagg.params import SecAggParams

log = logging.getLogger(__name__)

Routed = Mapping[int, Mapping[int, bytes]]
Replies = Mapping[int, tuple[Sequence[int], Sequence[bytes]]]


def _checked_vector(node: int, vector: object, size: int, params: SecAggParams) -> crypto.Vector:
    if not isinstance(vector, np.ndarray) or vector.dtype != params.dtype:
        kind = getattr(vector, "dtype", type(vector).__name__)
        raise SecAggError(f"node {node}: masked vector of {kind}, not {params.dtype}")
    if vector.shape != (size + 1,):
        raise SecAggError(f"node {node}: masked vector of shape {vector.shape}, not ({size + 1},)")
    if vector.size and int(vector.max()) >= params.modulus:
        raise SecAggError(f"node {node}: masked vector has values >= 2**{params.modulus_bits}")
    return vector.astype(np.uint64)


def _pk2(public_keys: Mapping[int, Sequence[bytes]], node: int) -> bytes:
    pair = public_keys.get(node)
    if pair is None or len(pair) != 2:
        raise SecAggError(f"node {node}: no (pk1, pk2) from the setup stage")
    return pair[1]


def _collect_shares(
    replies: Replies, routed: Routed, survivors: set[int], dropped: set[int]
) -> dict[int, list[bytes]]:
    """Owner → the shares the replies hold of it (seed shares of survivors, sk2 of the rest)."""
    collected: dict[int, list[bytes]] = {nid: [] for nid in survivors | dropped}
    for responder, (owners, owner_shares) in replies.items():
        if responder not in survivors:
            raise SecAggError(f"node {responder}: replied to the unmask stage, not a survivor")
        if len(owners) != len(owner_shares):
            raise SecAggError(
                f"node {responder}: {len(owners)} node ids for {len(owner_shares)} shares"
            )
        if len(set(owners)) != len(owners):
            raise SecAggError(f"node {responder}: returned two shares of one node (a replay)")
        held = mask_partners(routed, responder) | {responder}
        for owner, share in zip(owners, owner_shares, strict=True):
            if owner not in held or owner not in collected:
                raise SecAggError(f"node {responder}: returned a share of node {owner}, unasked")
            collected[owner].append(share)
    return collected


def unmask_sum(
    params: SecAggParams,
    public_keys: Mapping[int, Sequence[bytes]],
    routed: Routed,
    masked: Mapping[int, NDArray[np.unsignedinteger]],
    replies: Replies,
    size: int,
) -> crypto.Vector:
    """The sum of the survivors' quantized contributions, modulo ``2**modulus_bits``.

    Parameters
    ----------
    params : SecAggParams
        The protocol's parameters.
    public_keys : Mapping[int, Sequence[bytes]]
        Node id → ``(pk1, pk2)``, as the nodes sent them in the setup stage.
    routed : Mapping[int, Mapping[int, bytes]]
        :func:`fedpeft.secagg.graph.route`'s forwarding: destination → {source: ct}.
    masked : Mapping[int, numpy.ndarray]
        Survivor → its masked vector.
    replies : Mapping[int, tuple[Sequence[int], Sequence[bytes]]]
        Survivor → its unmask reply ``(node ids, shares)``; a survivor may be missing.
    size : int
        The length of an update (a masked vector has one more entry: the weight).

    Returns
    -------
    numpy.ndarray
        uint64, ``size + 1`` entries.

    Raises
    ------
    SecAggError
        Naming the node: a masked vector of the wrong dtype, shape or range, or from a node
        that shared no keys; a reply from a non-survivor, with a share it was not asked
        for or a repeated one; fewer than ``threshold`` shares of a secret, shares that do
        not combine, or a mask key that does not match the node's ``pk2``.

    """
    survivors = set(masked)
    for nid in sorted(survivors):
        if nid not in routed:
            raise SecAggError(f"node {nid}: sent a masked vector but shared no keys")
    dropped = {nid for nid in routed if nid not in survivors}
    total = np.zeros(size + 1, dtype=np.uint64)
    for nid in sorted(survivors):
        total = crypto.add(total, _checked_vector(nid, masked[nid], size, params), params)
    collected = _collect_shares(replies, routed, survivors, dropped)

    for nid in sorted(survivors):
        seed = shares.combine(collected[nid], params, nid, "mask seed")
        if len(seed) != crypto.SEED_BYTES:
            raise SecAggError(
                f"node {nid}: mask seed of {len(seed)} bytes, not {crypto.SEED_BYTES}"
            )
        total = crypto.subtract(total, crypto.mask(seed, size + 1, params), params)

    for nid in sorted(dropped):
        partners = sorted(v for v in survivors if nid in mask_partners(routed, v))
        if not partners:
            continue  # no survivor masked with it: nothing of it is in the sum
        sk2 = shares.combine(collected[nid], params, nid, "mask key")
        try:
            matches = crypto.public_key_of(sk2) == _pk2(public_keys, nid)
        except (ValueError, TypeError):
            matches = False
        if not matches:
            raise SecAggError(f"node {nid}: the reconstructed mask key does not match its pk2")
        for partner in partners:
            key = crypto.agree(sk2, _pk2(public_keys, partner))
            # What the dropped node would have added cancels what the partner added.
            total = crypto.add_pairwise(total, nid, partner, key, params)
        log.debug("node %d dropped: removed its masks with %d survivors", nid, len(partners))
    return total


def aggregate(
    params: SecAggParams,
    public_keys: Mapping[int, Sequence[bytes]],
    routed: Routed,
    masked: Mapping[int, NDArray[np.unsignedinteger]],
    replies: Replies,
    size: int,
) -> tuple[NDArray[np.float64], float]:
    """The survivors' sum of ``weight * clip(update)`` and sum of weights.

    See :func:`unmask_sum` for the parameters. Within
    :func:`fedpeft.secagg.encoding.error_bound` of the exact sums.

    Raises
    ------
    SecAggError
        As :func:`unmask_sum`; or when the unmasked sum is out of the range any sum of
        that many contributions lies in (a mask left in).

    """
    total = unmask_sum(params, public_keys, routed, masked, replies, size)
    return encoding.decode(params, total, len(masked))
