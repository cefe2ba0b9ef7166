"""A node's side of SecAgg+: one function per stage, over the node's state dict.

Each stage takes the state (see :mod:`fedpeft.secagg.state`) and the stage's inputs,
checks them, updates the state and returns the stage's reply. A stage that raises leaves
the state as it was. The stages, as in Flower's ``secaggplus_mod``:

1. :func:`setup`: two key pairs; the public keys go to the server.
2. :func:`share_keys`: a private mask seed; the seed and the mask key ``sk2`` are split
   into Shamir shares, one per neighbour, each sealed under the key agreed from ``sk1``.
3. :func:`masked_vector`: the node opens the shares its neighbours sealed for it and
   returns its quantized contribution plus its private mask plus one pairwise mask per
   neighbour whose shares it received, modulo ``2**modulus_bits``.
4. :func:`unmask`: the seed shares of surviving neighbours and the mask key shares of
   dropped ones, so the server can remove the masks.

``sk1``/``pk1`` encrypt the shares and ``sk2``/``pk2`` agree the pairwise masks (the
paper's c and s keys); Flower's client names them the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from fedpeft import protocol
from fedpeft.secagg import crypto, encoding, inputs, shares
from fedpeft.secagg.params import SecAggParams
from fedpeft.secagg.state import (
    State,
    expect_stage,
    get,
    held_shares,
    neighbours,
    params_of,
    set_held_shares,
)

log = logging.getLogger(__name__)

# Secrets a node drops once its masked vector is out: only the shares it holds remain.
_SPENT = (protocol.SECAGG_SK1, protocol.SECAGG_SK2, protocol.SECAGG_SEED)


def setup(state: State, params: SecAggParams, own_id: int) -> tuple[bytes, bytes]:
    """Start a new aggregation: clear ``state``, keep ``params`` and two fresh key pairs.

    Returns
    -------
    tuple[bytes, bytes]
        The public keys ``(pk1, pk2)`` (PEM).

    Raises
    ------
    SecAggError
        When ``own_id`` is not a node id.

    """
    shares.check_node_id(own_id)
    sk1, pk1 = crypto.new_key_pair()
    sk2, pk2 = crypto.new_key_pair()
    state.clear()
    state.update(params.to_config())
    state.update({
        protocol.SECAGG_NODE_ID: own_id,
        protocol.SECAGG_SK1: sk1, protocol.SECAGG_PK1: pk1,
        protocol.SECAGG_SK2: sk2, protocol.SECAGG_PK2: pk2,
        protocol.SECAGG_STAGE: protocol.SECAGG_SETUP,
    })  # fmt: skip
    log.debug("node %d: setup done", own_id)
    return pk1, pk2


def share_keys(state: State, public_keys: Mapping[int, Sequence[bytes]]) -> dict[int, bytes]:
    """Split the private mask seed and ``sk2`` among the neighbours, sealed for each.

    Parameters
    ----------
    state : dict
        The node's state after :func:`setup`.
    public_keys : Mapping[int, Sequence[bytes]]
        Node id → ``(pk1, pk2)`` of the node's neighbourhood, the node itself included.

    Returns
    -------
    dict[int, bytes]
        Destination node id → ciphertext, one per neighbour other than the node.

    Raises
    ------
    SecAggError
        When the node's own keys are missing or altered, a key repeats or does not parse,
        or the neighbourhood is smaller than the threshold or larger than the share count.

    """
    expect_stage(state, protocol.SECAGG_SETUP)
    params, own = params_of(state), get(state, protocol.SECAGG_NODE_ID)
    own_keys = (state[protocol.SECAGG_PK1], state[protocol.SECAGG_PK2])
    keys = inputs.check_public_keys(own, own_keys, public_keys, params)

    seed = crypto.new_seed()
    ids = sorted(keys)
    seed_shares = shares.split(seed, params)
    sk2_shares = shares.split(state[protocol.SECAGG_SK2], params)
    out: dict[int, bytes] = {}
    for i, nid in enumerate(ids):
        if nid == own:
            continue
        key = crypto.agree(state[protocol.SECAGG_SK1], keys[nid][0])
        out[nid] = shares.seal(key, own, nid, seed_shares[i], sk2_shares[i])
    mine = ids.index(own)
    state.update({
        protocol.SECAGG_SEED: seed,
        protocol.SECAGG_NEIGHBOURS: ids,
        protocol.SECAGG_NEIGHBOUR_PK1: [keys[nid][0] for nid in ids],
        protocol.SECAGG_NEIGHBOUR_PK2: [keys[nid][1] for nid in ids],
        protocol.SECAGG_STAGE: protocol.SECAGG_SHARE_KEYS,
    })  # fmt: skip
    set_held_shares(state, {own: (seed_shares[mine], sk2_shares[mine])})
    log.debug("node %d: sealed shares for %d neighbours", own, len(out))
    return out


def masked_vector(
    state: State,
    ciphertexts: Mapping[int, bytes],
    update: NDArray[np.floating],
    weight: float,
    rng: np.random.Generator,
) -> NDArray[np.unsignedinteger]:
    """Open the neighbours' shares; the node's masked contribution.

    Parameters
    ----------
    state : dict
        The node's state after :func:`share_keys`.
    ciphertexts : Mapping[int, bytes]
        Source node id → the ciphertext that neighbour sealed for this node.
    update : numpy.ndarray
        The node's 1-D float update.
    weight : float
        The node's weight, in ``[0, max_weight]``.
    rng : numpy.random.Generator
        The quantization's stochastic rounding (the masks come from the seeds).

    Returns
    -------
    numpy.ndarray
        ``len(update) + 1`` integers in ``[0, 2**modulus_bits)``, of ``params.dtype``:
        ``weight * clip(update)`` and ``weight``, quantized, plus the masks.

    Raises
    ------
    SecAggError
        When a source is not a neighbour (or the node itself), a ciphertext repeats,
        fewer than ``threshold - 1`` arrive, or one does not open as this pair's shares.
    ValueError
        When ``update`` or ``weight`` is out of range.

    """
    expect_stage(state, protocol.SECAGG_SHARE_KEYS)
    params, own = params_of(state), get(state, protocol.SECAGG_NODE_ID)
    keys = neighbours(state)
    inputs.check_inbox(own, keys, ciphertexts, params)
    contribution = encoding.encode(params, update, weight, rng)
    held = held_shares(state)
    for src in sorted(ciphertexts):
        key = crypto.agree(state[protocol.SECAGG_SK1], keys[src][0])
        held[src] = shares.unseal(key, ciphertexts[src], src, own, params)

    vector = crypto.add(
        contribution, crypto.mask(state[protocol.SECAGG_SEED], len(contribution), params), params
    )
    for src in sorted(ciphertexts):
        key = crypto.agree(state[protocol.SECAGG_SK2], keys[src][1])
        vector = crypto.add_pairwise(vector, own, src, key, params)

    set_held_shares(state, held)
    for spent in _SPENT:
        del state[spent]
    state[protocol.SECAGG_STAGE] = protocol.SECAGG_MASKED_VECTOR
    log.debug("node %d: masked vector of %d entries", own, len(vector))
    return vector.astype(params.dtype)


def unmask(
    state: State, active: Sequence[int], dropped: Sequence[int]
) -> tuple[list[int], list[bytes]]:
    """The shares the server needs to remove the masks, once.

    Parameters
    ----------
    state : dict
        The node's state after :func:`masked_vector`.
    active : Sequence[int]
        Neighbours (the node included) whose masked vectors the server holds.
    dropped : Sequence[int]
        Neighbours whose masked vectors it does not.

    Returns
    -------
    tuple[list[int], list[bytes]]
        ``active + dropped`` and, in that order, the seed share of each active node and
        the mask key share of each dropped one.

    Raises
    ------
    SecAggError
        When a node is listed twice, in both lists, or is not a neighbour; when the node
        itself is listed dropped; or when fewer than ``threshold`` are active (unmasking
        fewer contributions would expose too few to hide each other).

    """
    expect_stage(state, protocol.SECAGG_MASKED_VECTOR)
    params, own = params_of(state), get(state, protocol.SECAGG_NODE_ID)
    held = held_shares(state)
    inputs.check_unmask_request(own, held, active, dropped, params)
    out = [held[nid][0] for nid in active] + [held[nid][1] for nid in dropped]
    set_held_shares(state, {})
    state[protocol.SECAGG_STAGE] = protocol.SECAGG_UNMASK
    log.debug("node %d: %d seed and %d key shares out", own, len(active), len(dropped))
    return [*active, *dropped], out
