"""Check a client's training reply against the reference trainable set."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, RecordDict


@dataclass(frozen=True)
class TensorSpec:
    """Expected shape and dtype of one trainable tensor."""

    shape: tuple[int, ...]
    dtype: str


def reference_specs(record: ArrayRecord) -> dict[str, TensorSpec]:
    """The spec of every tensor in the (seeded) reference record."""
    return {k: TensorSpec(tuple(a.shape), str(a.dtype)) for k, a in record.items()}


def check_reply(
    content: RecordDict, reference: dict[str, TensorSpec], weight_key: str
) -> str | None:
    """Return why the reply is unusable, or ``None`` if it is valid.

    Checks: exactly one ArrayRecord and one MetricRecord; keys exactly the
    trainable set; shapes and dtypes of the decoded arrays; finite values; a
    positive integer weight ``weight_key``.
    """
    if len(content.array_records) != 1:
        return f"expected one ArrayRecord, got {len(content.array_records)}"
    if len(content.metric_records) != 1:
        return f"expected one MetricRecord, got {len(content.metric_records)}"
    record = next(iter(content.array_records.values()))
    missing = sorted(set(reference) - set(record))
    extra = sorted(set(record) - set(reference))
    if missing or extra:
        return f"keys differ from the trainable set: missing {missing[:5]}, extra {extra[:5]}"
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
        if not np.isfinite(value).all():
            return f"array {key!r} contains NaN or Inf"
    metrics = next(iter(content.metric_records.values()))
    weight = metrics.get(weight_key)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight <= 0:
        return f"{weight_key}={weight!r} is not a positive integer"
    for name, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value) and name != "train-loss":
            return f"metric {name!r} is {value}"
    return None
