"""Trainable state ↔ ArrayRecord, and byte counts of what actually travels."""

from __future__ import annotations

from collections.abc import Collection, Iterator

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from torch import nn

# Named numpy arrays: the trainable set as the server validates and aggregates it.
Arrays = dict[str, np.ndarray]

# A .npy v1.0 header (magic, version, length, dict padded to 64-byte
# alignment) is 128 bytes for every array shape used here: the per-tensor
# payload overhead of Flower's ``Array.data`` beyond numel × itemsize.
NPY_HEADER_BYTES = 128


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (a parameter shared by blocks appears once)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def to_numpy(state: dict[str, torch.Tensor]) -> Arrays:
    """Named tensors as contiguous CPU numpy arrays."""
    return {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in state.items()}


def to_arrayrecord(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """Serialise named tensors (copied to CPU numpy) into an ArrayRecord."""
    return ArrayRecord({k: Array(v) for k, v in to_numpy(state).items()})


def load_trainable(
    model: nn.Module, record: ArrayRecord, names: Collection[str] | None = None
) -> None:
    """Copy ``record`` into the model's trainable parameters (or those ``names``), strictly.

    Raises
    ------
    ValueError
        If the keys are not exactly that set, or a shape differs.

    """
    params = {
        n: p
        for n, p in model.named_parameters()
        if p.requires_grad and (names is None or n in names)
    }
    missing, extra = sorted(set(params) - set(record)), sorted(set(record) - set(params))
    if missing or extra:
        raise ValueError(f"arrays do not match the trainable set: missing {missing}, extra {extra}")
    with torch.no_grad():
        for name, param in params.items():
            value = torch.from_numpy(record[name].numpy())
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(
                    f"array {name!r}: shape {tuple(value.shape)} != expected {tuple(param.shape)}"
                )
            param.copy_(value)


def theoretical_bytes(record: ArrayRecord) -> int:
    """Σ numel × itemsize: the raw tensor bytes."""
    total = 0
    for arr in record.values():
        total += int(np.prod(arr.shape, dtype=np.int64)) * np.dtype(arr.dtype).itemsize
    return total


def payload_bytes(record: ArrayRecord) -> int:
    """Σ len(Array.data): the serialised (``.npy``) tensor buffers."""
    return sum(len(arr.data) for arr in record.values())


def _objects(record: ArrayRecord) -> Iterator[tuple[str, object]]:
    yield record.object_id, record
    for arr in record.values():
        yield arr.object_id, arr
        yield from arr.children.items()


def wire_bytes(record: ArrayRecord) -> int:
    """Bytes of the serialised objects Flower transfers for ``record``.

    Flower (≥ 1.20) moves a message as content-addressed objects: the
    ArrayRecord, each Array, and each Array's chunks, each deflated with a
    small header. Identical objects (same id) travel once, so this sums the
    deflated size of the record's unique objects.
    """
    unique = dict(_objects(record))
    return sum(len(obj.deflate()) for obj in unique.values())
