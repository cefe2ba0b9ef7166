"""Key pairs, key agreement, mask generation and arithmetic modulo ``2**modulus_bits``.

Key pairs, their serialisation and the agreement (ECDH on SECP384R1, then HKDF-SHA256) are
Flower's, as its SecAgg+ uses them; so is the modular arithmetic on lists of arrays. The
mask generator is this module's own: see :func:`mask`.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)
from numpy.typing import NDArray

from fedpeft.secagg.errors import SecAggError
from fedpeft.secagg.params import SecAggParams

SEED_BYTES = 32  # a private mask seed: 256 random bits
_MASK_DOMAIN = b"fedpeft-secagg-mask/v1:"

Vector = NDArray[np.uint64]


def new_key_pair() -> tuple[bytes, bytes]:
    """A fresh (private, public) key pair, PEM-serialised as Flower does."""
    private, public = generate_key_pairs()
    return private_key_to_bytes(private), public_key_to_bytes(public)


def public_key_of(private_key: bytes) -> bytes:
    """The PEM public key of a PEM private key.

    Raises
    ------
    ValueError
        When ``private_key`` is not a PEM EC private key.

    """
    return public_key_to_bytes(bytes_to_private_key(private_key).public_key())


def check_public_key(node_id: int, public_key: object) -> None:
    """Raise SecAggError unless ``public_key`` parses as a PEM EC public key.

    Raises
    ------
    SecAggError
        Naming ``node_id``.

    """
    try:
        if not isinstance(public_key, bytes):
            raise TypeError(type(public_key).__name__)
        bytes_to_public_key(public_key)
    except (ValueError, TypeError) as exc:
        raise SecAggError(f"node {node_id}: public key does not parse ({exc})") from None


def agree(private_key: bytes, public_key: bytes) -> bytes:
    """The key two nodes share: ECDH of one's private and the other's public key, HKDF'd.

    Symmetric: ``agree(sk_a, pk_b) == agree(sk_b, pk_a)``. 32 bytes, base64url-encoded
    (Fernet's key format).
    """
    return generate_shared_key(bytes_to_private_key(private_key), bytes_to_public_key(public_key))


def new_seed() -> bytes:
    """A fresh private mask seed from the operating system's CSPRNG."""
    return os.urandom(SEED_BYTES)


def mask(seed: bytes, length: int, params: SecAggParams) -> Vector:
    """``length`` pseudo-random integers, uniform in ``[0, 2**modulus_bits)``, from ``seed``.

    Flower's ``pseudo_rand_gen`` XOR-folds its seed to 32 bits and feeds numpy's Mersenne
    Twister: 2**32 possible masks per seed, which a server can enumerate to strip a
    pairwise mask, and a generator whose state its outputs reveal; it also draws from
    ``[0, num_range - 1)``, never the top value. This one expands the whole seed with
    SHAKE-256 (an extendable-output function) into 64-bit words, reduced modulo
    ``2**modulus_bits`` (a divisor of 2**64, so the result stays uniform).
    """
    stream = hashlib.shake_256(_MASK_DOMAIN + seed).digest(8 * length)
    words = np.frombuffer(stream, dtype="<u8").astype(np.uint64)
    return words & np.uint64(params.modulus - 1)


def add(a: Vector, b: Vector, params: SecAggParams) -> Vector:
    """``(a + b) mod 2**modulus_bits`` (uint64 wraps modulo 2**64, a multiple)."""
    return parameters_mod(parameters_addition([a], [b]), params.modulus)[0]


def subtract(a: Vector, b: Vector, params: SecAggParams) -> Vector:
    """``(a - b) mod 2**modulus_bits`` (uint64 wraps modulo 2**64, a multiple)."""
    return parameters_mod(parameters_subtraction([a], [b]), params.modulus)[0]


def add_pairwise(
    vector: Vector, own_id: int, other_id: int, key: bytes, params: SecAggParams
) -> Vector:
    """Add the pairwise mask ``own_id`` shares with ``other_id``: + if own id is the larger.

    The two nodes add it with opposite signs, so it cancels in their sum (Flower's
    convention: the node with the larger id adds, the smaller subtracts).
    """
    pairwise = mask(key, vector.shape[0], params)
    if own_id > other_id:
        return add(vector, pairwise, params)
    return subtract(vector, pairwise, params)
