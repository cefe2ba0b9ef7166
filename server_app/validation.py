"""Check a client's training reply against the reference trainable set and limits."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict

from fedpeft import protocol, wire
from fedpeft.arrays import Arrays
from fedpeft.codecs import Codec

NON_FINITE_OK = protocol.NON_FINITE_OK


@dataclass(frozen=True)
class TensorSpec:
    """Expected shape and dtype of one trainable tensor."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Limits:
    """Bounds on a reply; 0 disables a bound."""

    max_payload_bytes: int = 0
    max_num_examples: int = 0
    max_update_norm: float = 0.0


@dataclass(frozen=True)
class Checked:
    """A reply that passed every check: its decoded arrays, weight and update norm."""

    arrays: Arrays
    weight: int
    norm: float | None = None  # L2 norm of arrays - sent, when ``sent`` was given


def reference_specs(record: ArrayRecord) -> dict[str, TensorSpec]:
    """The spec of every tensor in the (seeded) reference record."""
    return {k: TensorSpec(tuple(a.shape), str(a.dtype)) for k, a in record.items()}


def _weight(metrics: dict, key: str, limits: Limits) -> int | str:
    weight = metrics.get(key)
    if not protocol.is_positive_int(weight):
        return f"{key}={weight!r} is not a positive integer"
    if limits.max_num_examples and weight > limits.max_num_examples:
        return f"{key}={weight} is implausibly large (limit {limits.max_num_examples})"
    return weight


def _decode(record: ArrayRecord, reference: dict[str, TensorSpec]) -> Arrays | str:
    arrays = {}
    for key, spec in reference.items():
        try:
            value = record[key].numpy()
        except Exception as exc:  # undecodable payload
            return f"array {key!r} cannot be decoded ({exc})"
        if tuple(value.shape) != spec.shape or str(value.dtype) != spec.dtype:
            return (
                f"array {key!r}: {value.dtype}{list(value.shape)}, "
                f"expected {spec.dtype}{list(spec.shape)}"
            )
        arrays[key] = value
    return _finite(arrays) or arrays


def _finite(arrays: Arrays) -> str | None:
    for key, value in arrays.items():
        if not np.isfinite(value).all():
            return f"array {key!r} contains NaN or Inf"
    return None


def _decode_update(
    content: RecordDict,
    record: ArrayRecord,
    reference: dict[str, TensorSpec],
    codec: Codec,
    sent: Arrays | None,
) -> Arrays | str:
    """``sent`` + the update a ``codec``-encoded reply carries, or why it is unusable."""
    named = wire.announced(content)
    if named != codec.name:
        return f"reply names codec {named!r}; this run's comm.uplink is {codec.name!r}"
    if sent is None:
        return "an encoded update cannot be checked without the arrays sent this round"
    update = wire.decode(record, {k: spec.shape for k, spec in reference.items()}, codec)
    if isinstance(update, str):
        return update
    bad = _finite(update)
    if bad:  # e.g. an fp16 value past 65,504
        return f"decoded update: {bad}"
    arrays = {k: (sent[k] + update[k]).astype(reference[k].dtype) for k in reference}
    return _finite(arrays) or arrays


def model_norm(arrays: Arrays) -> float:
    """L2 norm of all of ``arrays`` together (summed in float64)."""
    return math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays.values()))


def update_norm(arrays: Arrays, sent: Arrays) -> float:
    """L2 norm of ``arrays - sent`` over all tensors together."""
    return model_norm({k: arrays[k] - sent[k] for k in sent})


def reply_node(msg: Message, sent: list[Message] | None) -> int:
    """The node a reply is about: its sender, or, for an error the SuperLink wrote in a
    node's place (NODE_UNAVAILABLE: ``src_node_id`` is the SuperLink's own), the
    destination of the message in ``sent`` it answers.
    """  # noqa: D205
    meta = msg.metadata
    if msg.has_error() and sent is not None:
        for instr in sent:
            if instr.metadata.message_id == meta.reply_to_message_id:
                return instr.metadata.dst_node_id
    return meta.src_node_id


def check_envelope(
    msg: Message, server_round: int, sent: list[Message] | None, counts: Counter
) -> str | None:
    """The reason a reply does not belong to this round (``None`` if it does).

    It must carry the round's group id, come from a sampled node in reply to a
    message sent this round (``sent``; ``None`` when not known), and be that node's
    only reply (``counts``: replies per source node).
    """
    meta = msg.metadata
    if meta.group_id != str(server_round):
        return f"reply for round {meta.group_id!r}, expected round {server_round}"
    if sent is not None:
        if meta.src_node_id not in {m.metadata.dst_node_id for m in sent}:
            return f"node {meta.src_node_id} was not sampled in round {server_round}"
        ids = {m.metadata.message_id for m in sent} - {""}
        if ids and meta.reply_to_message_id not in ids:
            return f"reply to message {meta.reply_to_message_id!r}, not sent this round"
    if counts[meta.src_node_id] > 1:
        return f"node replied {counts[meta.src_node_id]} times in round {server_round}"
    return None


def check_reply(
    content: RecordDict,
    reference: dict[str, TensorSpec],
    weight_key: str,
    limits: Limits | None = None,
    sent: Arrays | None = None,
    codec: Codec | None = None,
) -> Checked | str:
    """Return the decoded reply, or the reason it is unusable.

    In order: exactly one ArrayRecord and one MetricRecord; serialised payload
    within ``limits.max_payload_bytes`` (before anything is decoded); keys
    exactly the trainable set; a positive integer weight ``weight_key`` within
    ``limits.max_num_examples``; shapes and dtypes of the decoded arrays; finite
    values; the update's L2 norm against ``sent`` within ``limits.max_update_norm``;
    finite metrics.

    With an encoding ``codec`` (``comm.uplink`` other than ``none``) the reply carries
    the update in that codec: it must name the codec, and its parts must match the
    codec's spec and checks (:func:`fedpeft.wire.decode`) before they are decoded and
    added to ``sent``; the result then goes through the checks above.
    """
    limits = limits or Limits()
    if len(content.array_records) != 1:
        return f"expected one ArrayRecord, got {len(content.array_records)}"
    if len(content.metric_records) != 1:
        return f"expected one MetricRecord, got {len(content.metric_records)}"
    record = next(iter(content.array_records.values()))
    size = sum(len(a.data) for a in record.values())
    if limits.max_payload_bytes and size > limits.max_payload_bytes:
        return f"payload of {size:,} bytes is over the budget of {limits.max_payload_bytes:,}"
    encoded = codec is not None and codec.encodes
    missing = sorted(set(reference) - set(record))
    extra = sorted(set(record) - set(reference))
    if (missing or extra) and not encoded:
        return f"keys differ from the trainable set: missing {missing[:5]}, extra {extra[:5]}"
    metrics = next(iter(content.metric_records.values()))
    weight = _weight(metrics, weight_key, limits)
    if isinstance(weight, str):
        return weight
    if encoded:
        arrays = _decode_update(content, record, reference, codec, sent)
    else:
        arrays = _decode(record, reference)
    if isinstance(arrays, str):
        return arrays
    norm = update_norm(arrays, sent) if sent is not None else None
    if limits.max_update_norm and norm is not None and norm > limits.max_update_norm:
        return f"update norm {norm:.4g} is above the bound {limits.max_update_norm:g}"
    for name, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value) and name not in NON_FINITE_OK:
            return f"metric {name!r} is {value}"
    return Checked(arrays, weight, norm)
