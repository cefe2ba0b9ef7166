"""A node's checks of what the server sends it at each stage, before it computes anything.

Each check raises :class:`~fedpeft.secagg.errors.SecAggError` naming the node (``own``)
and the problem; :mod:`fedpeft.secagg.client` runs them before it touches the state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

from fedpeft.secagg import crypto
from fedpeft.secagg.errors import SecAggError
from fedpeft.secagg.params import SecAggParams
from fedpeft.secagg.shares import check_node_id

T = TypeVar("T")


def by_node(ids: Sequence[int], values: Sequence[T], where: str) -> dict[int, T]:
    """Parallel lists off the wire (a ConfigRecord holds no maps) as node id → value.

    Raises
    ------
    SecAggError
        Naming ``where`` (e.g. "node 7: ciphertexts"): lists of different lengths, or an
        id twice (a replayed entry).

    """
    if len(ids) != len(values):
        raise SecAggError(f"{where}: {len(ids)} node ids for {len(values)} values")
    out: dict[int, T] = {}
    for nid, value in zip(ids, values, strict=True):
        check_node_id(nid)
        if nid in out:
            raise SecAggError(f"{where}: node {nid} listed twice (a replayed entry)")
        out[nid] = value
    return out


def check_public_keys(
    own: int,
    own_keys: tuple[bytes, bytes],
    public_keys: Mapping[int, Sequence[bytes]],
    params: SecAggParams,
) -> dict[int, tuple[bytes, bytes]]:
    """The share-keys stage's neighbourhood, checked: node id → ``(pk1, pk2)``.

    Raises
    ------
    SecAggError
        When the node's own keys are missing or altered, the neighbourhood is smaller than
        the threshold or larger than the share count, a key does not parse or two repeat.

    """
    keys = {nid: tuple(pair) for nid, pair in public_keys.items()}
    if own not in keys:
        raise SecAggError(f"node {own}: its own id is missing from the public keys")
    if keys[own] != own_keys:
        raise SecAggError(f"node {own}: its own public keys are listed altered")
    if not params.threshold <= len(keys) <= params.num_shares:
        raise SecAggError(
            f"node {own}: {len(keys)} neighbours (itself included), outside [threshold="
            f"{params.threshold}, num_shares={params.num_shares}]"
        )
    for nid, pair in keys.items():
        check_node_id(nid)
        if len(pair) != 2:
            raise SecAggError(f"node {own}: node {nid} has {len(pair)} public keys, not 2")
        for key in pair:
            crypto.check_public_key(nid, key)
    flat = [key for pair in keys.values() for key in pair]
    if len(set(flat)) != len(flat):
        raise SecAggError(f"node {own}: some public keys are identical")
    return keys  # type: ignore[return-value]


def check_inbox(
    own: int, neighbours: Collection[int], ciphertexts: Mapping[int, object], params: SecAggParams
) -> None:
    """Check the masked-vector stage's ciphertexts before any is opened.

    Raises
    ------
    SecAggError
        When a source is not a neighbour (or is the node itself), one ciphertext comes
        under two sources (a replay), or fewer than ``threshold - 1`` arrive.

    """
    by_text: dict[object, int] = {}
    for src, text in ciphertexts.items():
        if src == own or src not in neighbours:
            raise SecAggError(f"node {own}: a ciphertext from node {src}, not a neighbour")
        if text in by_text:
            raise SecAggError(
                f"node {own}: the ciphertexts from nodes {by_text[text]} and {src} are one "
                "ciphertext (a replay)"
            )
        by_text[text] = src
    if len(ciphertexts) + 1 < params.threshold:
        raise SecAggError(
            f"node {own}: shares from {len(ciphertexts)} neighbours, fewer than threshold - 1 "
            f"= {params.threshold - 1}"
        )


def check_unmask_request(
    own: int,
    owners: Collection[int],
    active: Sequence[int],
    dropped: Sequence[int],
    params: SecAggParams,
) -> None:
    """Check the unmask stage's lists against the ``owners`` whose shares the node holds.

    Raises
    ------
    SecAggError
        When a node is listed twice, in both lists, or is not an owner; when the node
        itself is listed dropped; or when fewer than ``threshold`` are active (the sum of
        fewer contributions would hide each too little, as in the paper's round 4).

    """
    listed = [*active, *dropped]
    for nid in listed:
        check_node_id(nid)
    both = sorted(set(active) & set(dropped))
    if both:
        raise SecAggError(f"node {own}: nodes {both} are listed both active and dropped")
    if len(set(listed)) != len(listed):
        raise SecAggError(f"node {own}: a node is listed twice")
    if own in dropped:
        raise SecAggError(f"node {own}: the node itself is listed dropped")
    unknown = sorted(set(listed) - set(owners))
    if unknown:
        raise SecAggError(f"node {own}: holds no shares of nodes {unknown}")
    if len(active) < params.threshold:
        raise SecAggError(
            f"node {own}: {len(active)} active neighbours, fewer than threshold {params.threshold}"
        )
