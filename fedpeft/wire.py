"""The trainable arrays on the wire: encoded records, their checks, and error feedback.

Both directions use one layout. Each trainable tensor ``k`` travels as the parts of its
codec (:mod:`fedpeft.codecs`): the main part under ``k``, the others under ``k#<part>``
(``k#index``); a part the codec shares (int8's scales) travels as one Array ``#<part>``,
the tensors' parts concatenated in sorted key order. The message names its codec in a ConfigRecord
(:data:`COMM`): the downlink in the train config (``comm-downlink``), the uplink in the
reply's ``comm`` record (``codec``). With ``comm.uplink = "none"`` a reply is the plain
fp32 weights, exactly as without compression; any other uplink codec sends the
**update** (trained − received), which the server adds back to what it sent. The
downlink only sends weights, so only codecs that can carry weights are offered there.

Error feedback (``comm.error-feedback``) keeps what the uplink codec lost on the client,
in ``Context.state`` (:data:`RESIDUAL`), and adds it to the next update, so that over
rounds what arrived plus the residual equals the sum of the true updates. A resumed run
is a new Flower run with new contexts: its clients start with a zero residual.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from . import protocol
from .arrays import Arrays
from .codecs import NONE, Codec, Parts

SEP = "#"
COMM = protocol.COMM  # the reply's ConfigRecord naming its codec
DOWNLINK_KEY = protocol.DOWNLINK  # the train/evaluate config's entry naming the downlink codec
RESIDUAL = protocol.RESIDUAL  # Context.state: the uplink's error-feedback residual

Shapes = Mapping[str, tuple[int, ...]]


def part_key(key: str, part: str) -> str:
    """Where part ``part`` of tensor ``key`` travels (the main part keeps the name)."""
    return f"{key}{SEP}{part}" if part else key


def encode(arrays: Arrays, codec: Codec) -> ArrayRecord:
    """``arrays`` (fp32) as ``codec``'s parts, in one ArrayRecord."""
    return _pack({k: codec.encode(v) for k, v in arrays.items()}, codec)


def _pack(parts: dict[str, Parts], codec: Codec) -> ArrayRecord:
    """Each tensor's encoded ``parts`` in one ArrayRecord (shared parts concatenated)."""
    record = ArrayRecord()
    shared: dict[str, list[np.ndarray]] = {part: [] for part in codec.shared}
    for key in sorted(parts):
        for part, data in parts[key].items():
            if part in shared:
                shared[part].append(data)
            else:
                record[part_key(key, part)] = Array(np.ascontiguousarray(data))
    for part, pieces in shared.items():
        record[part_key("", part)] = Array(np.ascontiguousarray(np.concatenate(pieces)))
    return record


def _read(record: ArrayRecord, name: str, dtype: str, shape: tuple[int, ...], codec: Codec
          ) -> np.ndarray | str:  # fmt: skip
    try:
        value = record[name].numpy()
    except Exception as exc:  # undecodable payload
        return f"array {name!r} cannot be decoded ({exc})"
    if str(value.dtype) != dtype or tuple(value.shape) != shape:
        return (f"{codec.name} encoding: array {name!r} is {value.dtype}{list(value.shape)}, "
                f"expected {dtype}{list(shape)}")  # fmt: skip
    return value


def decode(record: ArrayRecord, shapes: Shapes, codec: Codec) -> Arrays | str:
    """The fp32 tensors of ``record``, or why it is not a valid ``codec`` encoding.

    Checked before anything is decoded: the keys are exactly the parts of ``shapes``;
    each part's dtype and shape are the codec's spec for its tensor; then the values the
    spec cannot pin (:meth:`Codec.check`: int8 scales, top-k indices).
    """
    specs = {k: codec.spec(tuple(shapes[k])) for k in sorted(shapes)}
    expected = {part_key(k, p) for k, spec in specs.items() for p in spec if p not in codec.shared}
    expected |= {part_key("", p) for p in codec.shared}
    missing, extra = sorted(expected - set(record)), sorted(set(record) - expected)
    if missing or extra:
        return (f"{codec.name} encoding: keys differ from the codec's parts of the trainable "
                f"set: missing {missing[:5]}, extra {extra[:5]}")  # fmt: skip
    shared: dict[str, list[np.ndarray]] = {}
    for part in codec.shared:  # one Array each, split back by the tensors' spec sizes
        sizes = [spec[part][1][0] for spec in specs.values()]
        value = _read(record, part_key("", part), specs[next(iter(specs))][part][0],
                      (sum(sizes),), codec)  # fmt: skip
        if isinstance(value, str):
            return value
        shared[part] = np.split(value, np.cumsum(sizes)[:-1])
    out = {}
    for i, (key, spec) in enumerate(specs.items()):
        parts = {p: shared[p][i] for p in codec.shared}
        for part, (dtype, shape) in spec.items():
            if part not in codec.shared:
                value = _read(record, part_key(key, part), dtype, shape, codec)
                if isinstance(value, str):
                    return value
                parts[part] = value
        problem = codec.check(parts, tuple(shapes[key]))
        if problem:
            return f"{codec.name} encoding of {key!r}: {problem}"
        out[key] = codec.decode(parts, tuple(shapes[key]))
    return {k: out[k] for k in shapes}


def received(content: RecordDict, codec: Codec) -> ArrayRecord:
    """The fp32 global arrays of a server message whose downlink codec is ``codec``.

    Raises
    ------
    ValueError
        If the message names another codec than this run's ``comm.downlink``, or its
        arrays are not a valid encoding.

    """
    config = content.config_records.get(protocol.CONFIG)
    named = config.get(DOWNLINK_KEY, NONE) if config is not None else NONE
    if named != codec.name:
        raise ValueError(f"the server sent {named!r}-encoded arrays; this run's "
                         f"comm.downlink is {codec.name!r}")  # fmt: skip
    record = content.array_records[protocol.ARRAYS]
    if not codec.encodes:
        return record
    # downlink codecs are elementwise: the main part has the tensor's shape
    shapes = {k: tuple(record[k].shape) for k in record if SEP not in k}
    decoded = decode(record, shapes, codec)
    if isinstance(decoded, str):
        raise ValueError(f"downlink: {decoded}")
    return ArrayRecord({k: Array(v) for k, v in decoded.items()})


def announce(codec: Codec) -> ConfigRecord:
    """The reply's ``comm`` record: the uplink codec and what its parts carry."""
    return ConfigRecord({protocol.CODEC: codec.name, protocol.PAYLOAD: protocol.UPDATE,
                         protocol.CARRIED_AS: codec.carried_as})  # fmt: skip


def announced(content: RecordDict) -> str | None:
    """The codec a reply names in its ``comm`` record (``None``: it names none)."""
    record = content.config_records.get(COMM)
    codec = record.get(protocol.CODEC) if record is not None else None
    return codec if isinstance(codec, str) else None


def encode_update(
    trained: Arrays, received: Arrays, codec: Codec, state: RecordDict | None
) -> ArrayRecord:
    """The uplink record of ``trained − received``, with error feedback when ``state``.

    ``state`` is the client's ``Context.state``: its residual (what earlier rounds' codec
    lost) is added to the update before encoding, and what this encoding loses is kept
    there for the next round. ``None``: no error feedback.
    """
    update = {k: (trained[k].astype(np.float32) - received[k]).astype(np.float32) for k in received}
    # Per tensor: a round that sends part of the set (RoLoRA) keeps the others' residual.
    residual = state.array_records.get(RESIDUAL) if state is not None else None
    kept = {k: residual[k].numpy() for k in residual} if residual is not None else {}
    update = {k: v + kept[k] if k in kept and kept[k].shape == v.shape else v
              for k, v in update.items()}  # fmt: skip
    parts = {k: codec.encode(v) for k, v in update.items()}
    if state is not None:  # what this encoding loses, from the parts themselves
        lost = {**kept, **{k: v - codec.decode(parts[k], v.shape) for k, v in update.items()}}
        state[RESIDUAL] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in lost.items()})
    return _pack(parts, codec)
