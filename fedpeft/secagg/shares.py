"""Shamir shares of a node's secrets: splitting, sealing for a neighbour, combining.

Splitting and combining are Flower's (``create_shares``/``combine_shares``: PyCryptodome's
Shamir over GF(2^128), one polynomial per 16-byte chunk of the padded secret, a share
being a 4-byte little-endian index then 16 bytes per chunk); sealing is Flower's
plaintext layout (``share_keys_plaintext_concat``) under Flower's Fernet encryption. The
checks around them are this module's: Flower's versions trust their input.
"""

from __future__ import annotations

from cryptography.fernet import InvalidToken
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)

from fedpeft import protocol
from fedpeft.secagg.crypto import SEED_BYTES
from fedpeft.secagg.errors import SecAggError
from fedpeft.secagg.params import SecAggParams

_INDEX_BYTES = 4
_CHUNK_BYTES = 16
# A share of a 32-byte seed: its index and three chunks (32 bytes padded to 48).
SEED_SHARE_BYTES = _INDEX_BYTES + _CHUNK_BYTES * (SEED_BYTES // _CHUNK_BYTES + 1)
_HEADER_BYTES = 20  # the sealed plaintext: source (8), destination (8), share length (4)


def check_node_id(node_id: object) -> None:
    """Raise SecAggError unless ``node_id`` is an int in ``[0, 2**64)`` (8 sealed bytes).

    Raises
    ------
    SecAggError
        Naming the id.

    """
    if not protocol.is_int(node_id) or not 0 <= node_id < 1 << 64:  # type: ignore[operator]
        raise SecAggError(f"node id {node_id!r} is not an int in [0, 2**64)")


def split(secret: bytes, params: SecAggParams) -> list[bytes]:
    """``num_shares`` shares of ``secret``, any ``threshold`` of which reconstruct it."""
    return create_shares(secret, params.threshold, params.num_shares)


def share_index(share: bytes) -> int:
    """The Shamir index (1-based) a share carries."""
    return int.from_bytes(share[:_INDEX_BYTES], "little", signed=False)


def _well_formed(share: object, params: SecAggParams) -> bool:
    return (
        isinstance(share, bytes)
        and len(share) >= _INDEX_BYTES + _CHUNK_BYTES
        and (len(share) - _INDEX_BYTES) % _CHUNK_BYTES == 0
        and 1 <= share_index(share) <= params.num_shares
    )


def combine(shares: list[bytes], params: SecAggParams, owner: int, what: str) -> bytes:
    """The secret of node ``owner`` from its shares.

    With more than ``threshold`` shares, the secret from the first ``threshold`` must equal
    the one from all of them: shares off one polynomial give the same value, and a share
    altered in transit makes them differ (but for a 2**-128 chance).

    Raises
    ------
    SecAggError
        Naming ``owner`` and ``what``: fewer than ``threshold`` shares, a malformed share,
        shares of different lengths, two shares with one index (a replay), or shares
        that do not combine into one secret.

    """
    prefix = f"node {owner}: {what}"
    if len(shares) < params.threshold:
        raise SecAggError(
            f"{prefix}: {len(shares)} shares, fewer than threshold {params.threshold}"
        )
    if not all(_well_formed(share, params) for share in shares):
        raise SecAggError(f"{prefix}: a share is malformed")
    if len({len(share) for share in shares}) != 1:
        raise SecAggError(f"{prefix}: shares of different lengths")
    indices = [share_index(share) for share in shares]
    if len(set(indices)) != len(indices):
        raise SecAggError(f"{prefix}: two shares with one index (a replayed share)")
    try:
        secret = combine_shares(shares[: params.threshold])
        if len(shares) > params.threshold and combine_shares(shares) != secret:
            raise ValueError("the shares do not lie on one polynomial")
    except ValueError as exc:
        raise SecAggError(f"{prefix}: shares do not combine ({exc})") from None
    return secret


def seal(key: bytes, src: int, dst: int, seed_share: bytes, sk2_share: bytes) -> bytes:
    """``src``'s shares for ``dst``, with both ids, encrypted under their agreed key."""
    return encrypt(key, share_keys_plaintext_concat(src, dst, seed_share, sk2_share))


def unseal(
    key: bytes, ciphertext: object, src: int, dst: int, params: SecAggParams
) -> tuple[bytes, bytes]:
    """The (seed share, mask key share) ``src`` sealed for ``dst``.

    Raises
    ------
    SecAggError
        Naming both nodes: the ciphertext does not decrypt under their key (altered, or
        sealed for another pair), its plaintext names another source or destination, or
        the shares in it are malformed.

    """
    where = f"node {dst}: the ciphertext from node {src}"
    if not isinstance(ciphertext, bytes):
        raise SecAggError(f"{where} is {type(ciphertext).__name__}, not bytes")
    try:
        plaintext = decrypt(key, ciphertext)
    except InvalidToken:
        raise SecAggError(
            f"{where} does not decrypt under their agreed key (altered, or sealed for "
            "another destination)"
        ) from None
    if len(plaintext) < _HEADER_BYTES:
        raise SecAggError(f"{where} holds {len(plaintext)} bytes, less than a header")
    named_src, named_dst, seed_share, sk2_share = share_keys_plaintext_separate(plaintext)
    if named_src != src:
        raise SecAggError(f"{where} names node {named_src} as its source")
    if named_dst != dst:
        raise SecAggError(f"{where} names node {named_dst} as its destination")
    if (
        len(seed_share) != SEED_SHARE_BYTES
        or not _well_formed(seed_share, params)
        or not _well_formed(sk2_share, params)
        or share_index(seed_share) != share_index(sk2_share)
    ):
        raise SecAggError(f"{where} holds malformed shares")
    return seed_share, sk2_share
