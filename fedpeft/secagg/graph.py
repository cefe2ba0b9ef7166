"""The server's bookkeeping of who exchanges shares with whom.

:func:`neighbourhoods` is the communication graph of Flower's SecAgg+ workflow (and of
Bell et al.): the sampled nodes shuffled onto a ring, each the neighbour of the
``num_shares // 2`` nodes either side. :func:`route` forwards the sealed shares;
:func:`unmask_requests` says which shares each survivor is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np

from fedpeft.secagg.errors import SecAggError
from fedpeft.secagg.params import SecAggParams
from fedpeft.secagg.shares import check_node_id

log = logging.getLogger(__name__)


def neighbourhoods(
    node_ids: Iterable[int], params: SecAggParams, rng: np.random.Generator
) -> dict[int, list[int]]:
    """Node id → its neighbourhood (itself included, ascending).

    Parameters
    ----------
    node_ids : Iterable[int]
        The nodes that answered the setup stage.
    params : SecAggParams
        ``num_shares`` sizes a neighbourhood (all nodes when there are no more).
    rng : numpy.random.Generator
        Shuffles the ring; the nodes must not be able to predict it.

    Raises
    ------
    SecAggError
        When a node id repeats or is not one, there are more nodes than ``num_clients``,
        or fewer than ``threshold``.

    """
    ring = list(node_ids)
    for nid in ring:
        check_node_id(nid)
    if len(set(ring)) != len(ring):
        raise SecAggError("a node id repeats")
    if not params.threshold <= len(ring) <= params.num_clients:
        raise SecAggError(
            f"{len(ring)} nodes, outside [threshold={params.threshold}, "
            f"num_clients={params.num_clients}]"
        )
    if len(ring) <= params.num_shares:
        return {nid: sorted(ring) for nid in ring}
    ring = [ring[i] for i in rng.permutation(len(ring))]
    half = params.num_shares // 2
    return {
        nid: sorted(ring[(i + offset) % len(ring)] for offset in range(-half, half + 1))
        for i, nid in enumerate(ring)
    }


def route(ciphertexts: Mapping[int, Mapping[int, bytes]]) -> dict[int, dict[int, bytes]]:
    """Forward the sealed shares: source → {destination: ct} to destination → {source: ct}.

    Only pairs that sealed for each other are forwarded: a node adds a pairwise mask for
    each neighbour whose shares it receives, so a one-way pair (the other node dropped
    during the share-keys stage, or never addressed this one) would leave an uncancelled
    mask. Every node that replied gets an entry, empty if nothing reaches it.

    Raises
    ------
    SecAggError
        When a node addresses itself or one ciphertext appears twice (a replay).

    """
    seen: dict[bytes, tuple[int, int]] = {}
    for src, by_dst in ciphertexts.items():
        for dst, text in by_dst.items():
            if dst == src:
                raise SecAggError(f"node {src}: sealed shares for itself")
            if text in seen:
                raise SecAggError(
                    f"node {src}: its ciphertext for node {dst} repeats node {seen[text][0]}'s "
                    f"for node {seen[text][1]} (a replay)"
                )
            seen[text] = (src, dst)
    out: dict[int, dict[int, bytes]] = {nid: {} for nid in ciphertexts}
    for src, by_dst in ciphertexts.items():
        for dst, text in by_dst.items():
            if src in ciphertexts.get(dst, {}):
                out[dst][src] = text
            else:
                log.debug("node %d: its shares for node %d are not forwarded (one-way)", src, dst)
    return out


def mask_partners(routed: Mapping[int, Mapping[int, bytes]], node_id: int) -> set[int]:
    """The nodes ``node_id`` adds a pairwise mask for: those whose shares it was sent."""
    return set(routed.get(node_id, {}))


def unmask_requests(
    routed: Mapping[int, Mapping[int, bytes]], survivors: Iterable[int]
) -> dict[int, tuple[list[int], list[int]]]:
    """Survivor → (active, dropped): the owners whose shares the server asks it for.

    A survivor holds its own shares and those it was forwarded; it is asked for the seed
    shares of the owners that are survivors, and the mask key shares of the rest.

    Raises
    ------
    SecAggError
        When a survivor was not part of the share-keys stage.

    """
    alive = set(survivors)
    out: dict[int, tuple[list[int], list[int]]] = {}
    for nid in sorted(alive):
        if nid not in routed:
            raise SecAggError(f"node {nid}: sent a masked vector but shared no keys")
        held = mask_partners(routed, nid) | {nid}
        out[nid] = (sorted(held & alive), sorted(held - alive))
    return out
