"""A node's SecAgg+ stages as ClientApp handlers (registered in :mod:`client_app.app`).

The key stages (:func:`setup`, :func:`share_keys`, :func:`unmask`) need no model: this
module imports neither torch nor the model, and the node's protocol state lives in
``Context.state`` between the stages' messages (:mod:`fedpeft.secagg.state`). The masked
stage trains as the plain train handler does (``client_app.app``) and hands
:func:`masked` the tensors it would have sent up; the reply carries the masked vector
only: the weight (the example count) is inside it, and no metric travels in clear.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedpeft import protocol
from fedpeft.secagg import SecAggError, SecAggParams, client
from fedpeft.secagg.layout import flatten
from fedpeft.secagg.state import State, expect_stage, from_record, to_record

log = logging.getLogger(__name__)


def _stage_config(msg: Message) -> ConfigRecord:
    record = msg.content.config_records.get(protocol.SECAGG)
    if record is None:
        raise SecAggError(f"{msg.metadata.message_type}: no {protocol.SECAGG!r} record")
    return record


def _state(context: Context) -> State:
    record = context.state.config_records.get(protocol.SECAGG_STATE)
    return from_record(record) if record is not None else {}


def _keep(context: Context, state: State) -> None:
    context.state[protocol.SECAGG_STATE] = to_record(state)


def _reply(msg: Message, values: dict[str, object]) -> Message:
    return Message(RecordDict({protocol.SECAGG: ConfigRecord(values)}), reply_to=msg)  # type: ignore[arg-type]


def _ids(record: ConfigRecord, key: str) -> list[int]:
    value = record.get(key, [])
    if not isinstance(value, list) or not all(protocol.is_int(v) for v in value):
        raise SecAggError(f"{key}: expected a list of node ids")
    return [int(v) for v in value]


def _paired(record: ConfigRecord, ids_key: str, values_key: str) -> dict[int, bytes]:
    ids, values = _ids(record, ids_key), record.get(values_key, [])
    if not isinstance(values, list) or len(values) != len(ids):
        raise SecAggError(f"{values_key}: expected one entry per {ids_key}")
    if len(set(ids)) != len(ids):
        raise SecAggError(f"{ids_key}: a node id repeats")
    return dict(zip(ids, values, strict=True))


def setup(msg: Message, context: Context) -> Message:
    """Stage 1: fresh key pairs for these parameters; reply the public keys."""
    state: State = {}
    params = SecAggParams.from_config(_stage_config(msg))
    pk1, pk2 = client.setup(state, params, int(context.node_id))
    _keep(context, state)
    return _reply(msg, {protocol.SECAGG_PK1: pk1, protocol.SECAGG_PK2: pk2})


def share_keys(msg: Message, context: Context) -> Message:
    """Stage 2: seal the shares of the mask seed and key for each neighbour."""
    record, state = _stage_config(msg), _state(context)
    ids = _ids(record, protocol.SECAGG_NEIGHBOURS)
    pk1s = _paired(record, protocol.SECAGG_NEIGHBOURS, protocol.SECAGG_NEIGHBOUR_PK1)
    pk2s = _paired(record, protocol.SECAGG_NEIGHBOURS, protocol.SECAGG_NEIGHBOUR_PK2)
    sealed = client.share_keys(state, {nid: (pk1s[nid], pk2s[nid]) for nid in ids})
    _keep(context, state)
    dst = sorted(sealed)
    return _reply(msg, {protocol.SECAGG_DESTINATIONS: dst,
                        protocol.SECAGG_CIPHERTEXTS: [sealed[d] for d in dst]})  # fmt: skip


def expect_masked(context: Context) -> None:
    """Raise :class:`SecAggError` unless the node's last stage is share-keys."""
    expect_stage(_state(context), protocol.SECAGG_SHARE_KEYS)


def masked(
    msg: Message,
    context: Context,
    trained: Mapping[str, np.ndarray],
    sent: Mapping[str, np.ndarray],
    num_examples: int,
    clip_norm: float | None = None,
) -> Message:
    """Stage 3: the masked ``weight · clip(trained − sent)`` and ``weight``.

    ``clip_norm`` (central DP): the update is scaled to L2 norm at most this and the
    weight is 1, as the server's central-DP clipping would have done in clear.
    """
    record, state = _stage_config(msg), _state(context)
    inbox = _paired(record, protocol.SECAGG_SOURCES, protocol.SECAGG_CIPHERTEXTS)
    update = flatten(trained) - flatten(sent)
    params = SecAggParams.from_config(state)
    weight = float(num_examples)
    if clip_norm is not None:
        norm = float(np.linalg.norm(update))
        if norm > clip_norm:
            update *= clip_norm / norm
        weight = 1.0
    if weight > params.max_weight or not math.isfinite(weight):
        log.warning("node %d: weight %s counted as secagg.max-weight=%s", context.node_id,
                    weight, params.max_weight)  # fmt: skip
        weight = params.max_weight
    rng = np.random.default_rng()  # the stochastic rounding: not predictable by the server
    vector = client.masked_vector(state, inbox, update, weight, rng)
    _keep(context, state)
    arrays = ArrayRecord({protocol.SECAGG_MASKED: Array(np.ascontiguousarray(vector))})
    return Message(RecordDict({protocol.SECAGG: arrays}), reply_to=msg)


def unmask(msg: Message, context: Context) -> Message:
    """Stage 4: the seed shares of the active neighbours, the key shares of the dropped."""
    record, state = _stage_config(msg), _state(context)
    owners, shares = client.unmask(state, _ids(record, protocol.SECAGG_ACTIVE),
                                   _ids(record, protocol.SECAGG_DROPPED))  # fmt: skip
    _keep(context, state)
    return _reply(msg, {protocol.SECAGG_OWNERS: owners, protocol.SECAGG_SHARES: shares})
