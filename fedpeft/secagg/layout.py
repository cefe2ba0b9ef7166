"""The masked vector's layout: the update's tensors, one after another, in ascending key
order. The node flattens with :func:`flatten`, the server cuts the unmasked sum back with
:func:`unflatten`; both sides read the order from here.
"""  # noqa: D205

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def flatten(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The arrays as one float64 vector, in ascending key order."""
    if not arrays:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(arrays[k], dtype=np.float64).ravel() for k in sorted(arrays)])


def unflatten(vector: np.ndarray, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """``vector`` cut into ``shapes``, in ascending key order (:func:`flatten`'s inverse)."""
    out, at = {}, 0
    for key in sorted(shapes):
        size = int(np.prod(shapes[key], dtype=np.int64))
        out[key] = vector[at : at + size].reshape(shapes[key])
        at += size
    return out
