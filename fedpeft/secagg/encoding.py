"""A node's contribution as integers, and the sum of contributions back as floats.

A contribution is ``weight * clip(update)`` with ``weight`` appended. The update part maps
``[-max_weight * clip, max_weight * clip]`` affinely onto ``[0, quantization_max]``, the
weight ``[0, max_weight]`` onto the same range; both are rounded stochastically, so each
quantized entry is an unbiased estimate of its scaled value, off by less than one step.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from flwr.common.secure_aggregation.quantization import dequantize
from numpy.typing import NDArray

from fedpeft.secagg.errors import SecAggError
from fedpeft.secagg.params import SecAggParams


def _half_range(params: SecAggParams) -> float:
    """The largest magnitude of an entry of ``weight * clip(update)``."""
    return params.max_weight * params.clipping_range


def _stochastic_round(values: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.uint64]:
    """Round each value down or up with the probabilities that make it unbiased.

    Written here because Flower's ``quantize`` rounds with numpy's global generator (no
    caller-given one), casts to int32 (wrapping above 2**31) and maps the clipping range
    onto ``quantization_range + 1`` levels. ``floor(v) + (u < v - floor(v))`` leaves an
    integer ``v`` (the top of the range included) as it is; ``floor(v + u)`` can round it
    up in float64 when ``u`` is within an ulp of 1.
    """
    low = np.floor(values)
    up = rng.random(values.shape) < (values - low)
    return low.astype(np.uint64) + up.astype(np.uint64)


def encode(
    params: SecAggParams, update: NDArray[np.floating], weight: float, rng: np.random.Generator
) -> NDArray[np.uint64]:
    """The quantized contribution of a node: ``len(update) + 1`` integers.

    Parameters
    ----------
    params : SecAggParams
        The protocol's parameters.
    update : numpy.ndarray
        A 1-D float vector; entries are clipped to ``[-clipping_range, clipping_range]``.
    weight : float
        The node's weight, in ``[0, max_weight]``.
    rng : numpy.random.Generator
        The stochastic rounding's randomness.

    Returns
    -------
    numpy.ndarray
        uint64 entries in ``[0, quantization_max]``.

    Raises
    ------
    ValueError
        When ``update`` is not a finite 1-D float vector or ``weight`` is out of range.

    """
    update = np.asarray(update)
    if update.ndim != 1 or not np.issubdtype(update.dtype, np.floating):
        raise ValueError(f"update must be a 1-D float vector; got {update.dtype} {update.shape}")
    if not np.isfinite(update).all():
        raise ValueError("update has non-finite entries")
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise ValueError(f"weight must be a number; got {weight!r}")
    if not (math.isfinite(weight) and 0 <= weight <= params.max_weight):
        raise ValueError(f"weight must be in [0, max_weight={params.max_weight}]; got {weight}")
    half = _half_range(params)
    clipped = np.clip(update.astype(np.float64), -params.clipping_range, params.clipping_range)
    scaled = (float(weight) * clipped + half) * (params.quantization_max / (2 * half))
    scaled = np.clip(scaled, 0.0, params.quantization_max)  # float rounding at the ends
    scaled_weight = min(float(weight) / params.max_weight, 1.0) * params.quantization_max
    return _stochastic_round(np.append(scaled, scaled_weight), rng)


def decode(
    params: SecAggParams, total: NDArray[np.uint64], num_summed: int
) -> tuple[NDArray[np.float64], float]:
    """The sum of ``num_summed`` contributions from the sum of their encodings.

    Returns
    -------
    tuple[numpy.ndarray, float]
        The sum of ``weight * clip(update)`` (float64) and the sum of the weights.

    Raises
    ------
    SecAggError
        When an entry exceeds ``num_summed * quantization_max``, which no sum of
        ``num_summed`` encodings does: masks were left in or taken twice.

    """
    total = np.asarray(total, dtype=np.uint64)
    bound = num_summed * params.quantization_max
    if total.size and int(total.max()) > bound:
        first = int(np.argmax(total > np.uint64(bound)))
        raise SecAggError(
            f"unmasked sum out of range at entry {first}: {int(total[first])} > "
            f"{num_summed} x {params.quantization_max}; masks were not all removed"
        )
    half = _half_range(params)
    # Flower's dequantize maps one encoding back to [-half, half]; a sum of n encodings
    # carries n offsets of -half, so n - 1 more come off, as in Flower's SecAgg+ workflow.
    (vector,) = dequantize([total[:-1]], half, params.quantization_max)
    vector = vector - (num_summed - 1) * half
    weight = float(total[-1]) * params.max_weight / params.quantization_max
    return vector, weight


def error_bound(params: SecAggParams, num_summed: int) -> tuple[float, float]:
    """Bounds on the decoded sums' quantization error, for ``num_summed`` contributions.

    Each entry is off by less than one quantization step from its scaled value: a step is
    ``2 * max_weight * clipping_range / quantization_max`` for the update part and
    ``max_weight / quantization_max`` for the weight. A sum of ``num_summed`` entries is
    off by less than ``num_summed`` steps (plus float64 rounding, ~1e-16 relative).

    Returns
    -------
    tuple[float, float]
        The bound for each entry of the update sum and for the weight sum.

    """
    step = 2 * _half_range(params) / params.quantization_max
    weight_step = params.max_weight / params.quantization_max
    return num_summed * step, num_summed * weight_step
