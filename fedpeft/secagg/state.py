"""A node's SecAgg+ state: a plain dict of ints, floats, bytes and lists of them.

Its keys are :mod:`fedpeft.protocol`'s ``SECAGG_*`` names, its values what a ConfigRecord
holds, so a ClientApp keeps it between the stages' messages in ``Context.state`` (under
``protocol.SECAGG_STATE``) with :func:`to_record` and :func:`from_record`. Maps (node id to
key or share) are kept as parallel lists.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord

from fedpeft import protocol
from fedpeft.secagg.errors import SecAggError
from fedpeft.secagg.params import SecAggParams

State = dict[str, Any]


def to_record(state: State) -> ConfigRecord:
    """The state as a ConfigRecord (lists are copied)."""
    return ConfigRecord({k: list(v) if isinstance(v, list) else v for k, v in state.items()})


def from_record(record: ConfigRecord) -> State:
    """The state a :func:`to_record` record holds (lists are copied)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in record.items()}


def get(state: State, key: str) -> Any:
    """``state[key]``.

    Raises
    ------
    SecAggError
        When the state lacks ``key`` (a stage ran out of order, or the state was lost).

    """
    if key not in state:
        raise SecAggError(f"SecAgg+ state lacks {key!r}")
    return state[key]


def expect_stage(state: State, previous: str) -> None:
    """Check that the last stage the node completed is ``previous``.

    Raises
    ------
    SecAggError
        Naming the node, the stage it is at and the one expected.

    """
    stage = state.get(protocol.SECAGG_STAGE)
    if stage != previous:
        node = state.get(protocol.SECAGG_NODE_ID)
        nxt = protocol.SECAGG_STAGES[protocol.SECAGG_STAGES.index(previous) + 1]
        raise SecAggError(
            f"node {node}: stage {nxt!r} needs stage {previous!r} just before it; the node's "
            f"last stage is {stage!r}"
        )


def params_of(state: State) -> SecAggParams:
    """The protocol parameters the setup stage stored."""
    return SecAggParams.from_config(state)


def neighbours(state: State) -> dict[int, tuple[bytes, bytes]]:
    """Node id → (pk1, pk2) of the node's neighbourhood, the node included."""
    ids = get(state, protocol.SECAGG_NEIGHBOURS)
    pk1s = get(state, protocol.SECAGG_NEIGHBOUR_PK1)
    pk2s = get(state, protocol.SECAGG_NEIGHBOUR_PK2)
    return {nid: (pk1, pk2) for nid, pk1, pk2 in zip(ids, pk1s, pk2s, strict=True)}


def held_shares(state: State) -> dict[int, tuple[bytes, bytes]]:
    """Owner node id → (seed share, mask key share) of the shares the node holds."""
    owners = get(state, protocol.SECAGG_SHARE_OWNERS)
    seeds = get(state, protocol.SECAGG_SEED_SHARES)
    keys = get(state, protocol.SECAGG_SK2_SHARES)
    return {nid: (seed, key) for nid, seed, key in zip(owners, seeds, keys, strict=True)}


def set_held_shares(state: State, shares: dict[int, tuple[bytes, bytes]]) -> None:
    """Store owner node id → (seed share, mask key share), ascending by owner."""
    owners = sorted(shares)
    state[protocol.SECAGG_SHARE_OWNERS] = owners
    state[protocol.SECAGG_SEED_SHARES] = [shares[nid][0] for nid in owners]
    state[protocol.SECAGG_SK2_SHARES] = [shares[nid][1] for nid in owners]
