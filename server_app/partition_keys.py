"""Partitions bound to authenticated SuperNodes (``server.partition-registry``).

Without it a node may claim any free ``partition-id`` in its query reply. With
SuperNode authentication the SuperLink knows each node's public key (Flower's
``NodeInfo.public_key``: the key registered with ``flwr supernode register``, as PEM),
and the operator, who registers those keys, writes which partition each may hold:

.. code-block:: toml

    # partition id = that SuperNode's public key file (OpenSSH, relative to this file)
    0 = "keys/supernode-1.pub"
    1 = "keys/supernode-2.pub"

A file written by the operator, not first-claim-wins: under first-claim-wins whoever
connects first takes a partition (and a restarted run would bind afresh), while a
registry holds from the first round, needs no state of its own, and sits beside the
key registration the operator does anyway. A node whose claim does not match — another
key's partition, a partition not listed, or no authenticated key at all — is refused
with a logged reason and never sampled; the rightful node can still claim it.
"""

from __future__ import annotations

from pathlib import Path

import tomllib
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def _pem(path: Path) -> bytes:
    """The public key at ``path`` (OpenSSH) as the SuperLink stores it (PEM, SPKI)."""
    key = serialization.load_ssh_public_key(path.read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):  # what Flower's node auth accepts
        raise ValueError(f"not an EC public key ({type(key).__name__})")
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip


class PartitionKeys:
    """Partition id → the PEM public key of the SuperNode that may hold it."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, path: str | Path) -> PartitionKeys:
        """Read a registry file; every key file must exist and be a distinct EC key.

        Raises
        ------
        ValueError
            Naming the file and the bad entry.

        """
        path = Path(path).expanduser()
        where = f"server.partition-registry={str(path)!r}"
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        keys: dict[int, bytes] = {}
        for pid, file in table.items():
            if not pid.isdigit() or not isinstance(file, str):
                raise ValueError(f"{where}: entry {pid} = {file!r}; expected "
                                 "<partition id> = \"<public key file>\"")  # fmt: skip
            try:
                pem = _pem(path.parent / Path(file).expanduser())
            except (OSError, ValueError) as exc:
                raise ValueError(f"{where}: partition {pid}: {file}: {exc}") from exc
            if pem in keys.values():
                raise ValueError(f"{where}: partition {pid}: {file} holds another partition")
            keys[int(pid)] = pem
        if not keys:
            raise ValueError(f"{where}: no partition is listed")
        return cls(keys)

    def refusal(self, partition_id: int, public_key: bytes | None) -> str | None:
        """Why a node with ``public_key`` may not hold ``partition_id`` (``None``: it may)."""
        bound = self.keys.get(partition_id)
        if bound is None:
            return f"partition {partition_id} is not in server.partition-registry"
        if not public_key:
            return (f"it claims partition {partition_id} without an authenticated public key "
                    "(SuperNode authentication off?)")  # fmt: skip
        if public_key != bound:
            return f"partition {partition_id} is bound to another SuperNode's public key"
        return None
