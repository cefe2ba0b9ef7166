"""Tensor codecs for the wire (``comm.uplink`` / ``comm.downlink``): fp16, bf16, int8, top-k.

A codec turns one fp32 tensor into named *parts* (numpy arrays that Flower's ``Array``
carries as they are) and back. The part named ``""`` is the main one; ``int8`` adds
``"scale"`` (its absmax scales), ``topk`` adds ``"index"`` (the flat positions of the
values it keeps). A part named in :attr:`Codec.shared` travels concatenated over all
tensors in one Array (:mod:`fedpeft.wire`): int8's scales are a few values per tensor,
and an Array of their own would cost each tensor a second object header.
:meth:`Codec.spec` gives the dtype and shape of every part for a tensor of a given
shape, so the receiver can check an encoded tensor *before* it decodes it, and
:meth:`Codec.check` checks the values a spec cannot (scales finite and positive;
indices in range, unique, sorted). Adding a codec is a class registered in :data:`CODECS`.

Written here rather than taken from a library: Flower ships no update compression, and
NVFlare's quantisation filters are tied to its own message types (NVFlare's documentation
of its ``nvflare.app_opt.pt.quantization`` filters).
numpy has no bfloat16, so ``bf16`` carries the bit pattern as ``uint16`` (torch does the
round-to-nearest-even conversion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .registry import Registry

Parts = dict[str, np.ndarray]
Spec = dict[str, tuple[str, tuple[int, ...]]]  # part name → (dtype, shape)

INT8_MAX = 127
NONE = "none"  # the null codec's name: the configured default of both directions


@dataclass(frozen=True)
class CodecParams:
    """``comm.int8-block`` and ``comm.topk-fraction``."""

    int8_block: int = 0  # elements per int8 scale; 0 = one scale for the whole tensor
    topk_fraction: float = 0.1


class Codec:
    """Encodes one fp32 tensor into parts and decodes them back (see the module doc)."""

    name: ClassVar[str] = ""
    # Whether the codec may send whole weights (downlink). Lossy codecs with large errors
    # on weights (int8, topk) only make sense for an update, which the downlink is not.
    absolute: ClassVar[bool] = True
    # Whether ``comm.error-feedback = "auto"`` keeps a residual for this uplink codec: on
    # where the codec drops much (int8's rounding, top-k's zeros), off for fp16 / bf16.
    feedback_by_default: ClassVar[bool] = False
    # What the parts carry, written into the run record (e.g. bf16's uint16 bits).
    carried_as: ClassVar[str] = ""
    # Whether the tensors travel encoded: every codec but the null one, whose replies are
    # the plain fp32 weights.
    encodes: ClassVar[bool] = True
    # Parts that travel concatenated over the tensors (in key order), one Array in all.
    shared: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: CodecParams) -> None:
        self.params = params

    def spec(self, shape: tuple[int, ...]) -> Spec:
        """The dtype and shape of every part for a tensor of ``shape``."""
        return {"": ("float32", shape)}

    def encode(self, x: np.ndarray) -> Parts:
        """The parts of fp32 tensor ``x``."""
        return {"": np.ascontiguousarray(x, dtype=np.float32)}

    def decode(self, parts: Parts, shape: tuple[int, ...]) -> np.ndarray:
        """The fp32 tensor of ``parts`` (which passed :meth:`spec` and :meth:`check`)."""
        return np.asarray(parts[""], dtype=np.float32).reshape(shape)

    def check(self, parts: Parts, shape: tuple[int, ...]) -> str | None:
        """What is wrong with the values of ``parts`` beyond their spec (``None``: nothing)."""
        return None


CODECS: Registry[type[Codec]] = Registry("wire codec")


def _register(cls: type[Codec]) -> type[Codec]:
    CODECS.add(cls.name, cls)
    return cls


@_register
class NoCodec(Codec):
    """fp32 as it is: the tensors travel unchanged (the default)."""

    name = NONE
    encodes = False


@_register
class Fp16(Codec):
    """IEEE half precision: 2 bytes per value, ~3 significant digits, |x| < 65,504."""

    name = "fp16"
    carried_as = "float16"

    def spec(self, shape: tuple[int, ...]) -> Spec:
        return {"": ("float16", shape)}

    def encode(self, x: np.ndarray) -> Parts:
        return {"": np.ascontiguousarray(x, dtype=np.float16)}


@_register
class Bf16(Codec):
    """bfloat16 (fp32's exponent, 8 bits of mantissa), carried as its uint16 bit pattern."""

    name = "bf16"
    carried_as = "uint16 bit pattern of bfloat16 (numpy has no bfloat16)"

    def spec(self, shape: tuple[int, ...]) -> Spec:
        return {"": ("uint16", shape)}

    def encode(self, x: np.ndarray) -> Parts:
        bits = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)
        return {"": bits.view(torch.int16).numpy().view(np.uint16).copy()}

    def decode(self, parts: Parts, shape: tuple[int, ...]) -> np.ndarray:
        bits = torch.from_numpy(np.ascontiguousarray(parts[""]).view(np.int16))
        return bits.view(torch.bfloat16).float().numpy().reshape(shape)


def num_blocks(size: int, block: int) -> int:
    """int8 scales of a tensor of ``size`` elements (``block`` 0: one for the tensor)."""
    return 1 if block <= 0 or size == 0 else math.ceil(size / block)


@_register
class Int8(Codec):
    """Symmetric int8 with absmax scales, one per tensor or per ``comm.int8-block`` values.

    ``q = round(x / s)`` with ``s = absmax / 127`` (1 where a block is all zeros, so every
    scale is positive); decoding gives ``q · s``, within ``s / 2`` of ``x`` per element.
    """

    name = "int8"
    absolute = False
    feedback_by_default = True
    carried_as = "int8 values and float32 absmax scales"
    shared = ("scale",)

    def _block(self, size: int) -> int:
        return self.params.int8_block if self.params.int8_block > 0 else max(size, 1)

    def spec(self, shape: tuple[int, ...]) -> Spec:
        size = math.prod(shape)
        return {
            "": ("int8", shape),
            "scale": ("float32", (num_blocks(size, self.params.int8_block),)),
        }

    def encode(self, x: np.ndarray) -> Parts:
        flat = np.asarray(x, dtype=np.float32).reshape(-1)
        block = self._block(flat.size)
        padded = np.zeros(num_blocks(flat.size, self.params.int8_block) * block, np.float32)
        padded[: flat.size] = flat
        blocks = padded.reshape(-1, block)
        absmax = np.abs(blocks).max(axis=1)
        scale = np.where(absmax > 0, absmax / INT8_MAX, 1.0).astype(np.float32)
        q = np.clip(np.rint(blocks / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
        return {"": q.reshape(-1)[: flat.size].reshape(x.shape), "scale": scale}

    def decode(self, parts: Parts, shape: tuple[int, ...]) -> np.ndarray:
        q = parts[""].reshape(-1).astype(np.float32)
        scale = np.repeat(parts["scale"], self._block(q.size))[: q.size]
        return (q * scale).reshape(shape)

    def check(self, parts: Parts, shape: tuple[int, ...]) -> str | None:
        scale = parts["scale"]
        if not np.isfinite(scale).all() or not (scale > 0).all():
            return "int8 scales must be finite and > 0"
        if (parts[""] == -INT8_MAX - 1).any():
            return f"int8 values must be in [-{INT8_MAX}, {INT8_MAX}] (-128 is not used)"
        return None


def topk_count(size: int, fraction: float) -> int:
    """How many of ``size`` values top-k keeps: ``ceil(fraction · size)``, at least 1."""
    return min(size, max(1, math.ceil(fraction * size)))


@_register
class TopK(Codec):
    """The ``comm.topk-fraction`` largest-|x| entries: fp32 values and int32 flat indices.

    The indices are sorted ascending (a canonical form the receiver checks); ties at the
    threshold are broken by position.
    """

    name = "topk"
    absolute = False
    feedback_by_default = True
    carried_as = "float32 values and int32 flat indices (ascending) of the largest |x|"

    def spec(self, shape: tuple[int, ...]) -> Spec:
        k = topk_count(math.prod(shape), self.params.topk_fraction)
        return {"": ("float32", (k,)), "index": ("int32", (k,))}

    def encode(self, x: np.ndarray) -> Parts:
        flat = np.asarray(x, dtype=np.float32).reshape(-1)
        k = topk_count(flat.size, self.params.topk_fraction)
        # stable sort of -|x|: the largest magnitudes first, ties by position
        index = np.sort(np.argsort(-np.abs(flat), kind="stable")[:k]).astype(np.int32)
        return {"": flat[index].copy(), "index": index}

    def decode(self, parts: Parts, shape: tuple[int, ...]) -> np.ndarray:
        out = np.zeros(math.prod(shape), dtype=np.float32)
        out[parts["index"]] = parts[""]
        return out.reshape(shape)

    def check(self, parts: Parts, shape: tuple[int, ...]) -> str | None:
        index = parts["index"]
        size = math.prod(shape)
        if index.size and (int(index.min()) < 0 or int(index.max()) >= size):
            return f"top-k indices must be in [0, {size})"
        if (np.diff(index.astype(np.int64)) <= 0).any():
            dup = np.unique(index).size != index.size
            return "top-k indices repeat" if dup else "top-k indices are not sorted ascending"
        return None
