"""server.partition-registry: partitions bound to the SuperNodes' authenticated keys."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from server_app.app import make_strategy
from server_app.partition_keys import PartitionKeys
from server_app.sampling import NodeDirectory
from tests.fakes import HEAD_REF, FakeGrid
from tests.runs import tiny_config


def _key_pair(folder: Path, name: str) -> bytes:
    """Write ``<name>.pub`` (OpenSSH, as node-keys.sh makes it); return the key as PEM."""
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    ssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    (folder / f"{name}.pub").write_bytes(ssh + b" " + name.encode() + b"\n")
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip


@pytest.fixture
def keys(tmp_path):
    (tmp_path / "keys").mkdir()
    pems = {name: _key_pair(tmp_path / "keys", name) for name in ("a", "b", "c")}
    registry = tmp_path / "registry.toml"
    registry.write_text('0 = "keys/a.pub"\n1 = "keys/b.pub"\n')
    return registry, pems


def test_a_claim_must_match_the_partitions_key(keys):
    # Prepare
    registry, pem = keys
    # Execute
    bound = PartitionKeys.load(registry)
    # Assert: the owner may; another registered key, an unlisted partition and a node
    # without a key may not, each with its reason
    assert bound.refusal(0, pem["a"]) is None and bound.refusal(1, pem["b"]) is None
    assert "bound to another SuperNode's public key" in bound.refusal(0, pem["b"])
    assert "partition 2 is not in server.partition-registry" in bound.refusal(2, pem["c"])
    assert "without an authenticated public key" in bound.refusal(0, b"")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('0 = "keys/missing.pub"\n', "partition 0: keys/missing.pub: .*No such file"),
        ('x = "keys/a.pub"\n', "entry x = 'keys/a.pub'; expected <partition id>"),
        ('0 = "keys/a.pub"\n1 = "keys/a.pub"\n', "partition 1: keys/a.pub holds another"),
        ('0 = "keys/ed.pub"\n', "partition 0: keys/ed.pub: not an EC public key"),
        ("0 = \n", "registry.toml"),
        ("", "no partition is listed"),
    ],
)
def test_a_bad_registry_fails_naming_the_entry(keys, text, reason):
    # Prepare: the ed25519 key Flower's node auth would not take either
    registry, _ = keys
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    (registry.parent / "keys" / "ed.pub").write_bytes(
        ed.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    registry.write_text(text)
    # Execute / Assert
    with pytest.raises(ValueError, match=rf"server.partition-registry=.*{reason}"):
        PartitionKeys.load(registry)


@pytest.mark.parametrize("impostor", [5, 8])
def test_an_impostor_claiming_anothers_partition_is_refused_and_never_sampled(
    keys, caplog, impostor
):
    # Prepare: the impostor (key c) claims partition 0 before (node 5) or after (node 8)
    # its owner, node 7 (key a), answers; node 6 (key b) holds partition 1
    registry, pem = keys
    nodes = NodeDirectory(seed=0, keys=PartitionKeys.load(registry))
    grid = FakeGrid({n: p for n, p in ((5, 0), (6, 1), (7, 0), (8, 0)) if n in (6, 7, impostor)},
                    {}, public_keys={impostor: pem["c"], 6: pem["b"], 7: pem["a"]})  # fmt: skip
    # Execute
    with caplog.at_level(logging.WARNING):
        picked = [nodes.sample(grid, r, 1.0, 1, 1) for r in (1, 2)]
    # Assert: the impostor is refused (logged once: it is not asked again), the owner
    # takes partition 0, and only the two rightful nodes are sampled
    assert picked == [[7, 6], [7, 6]]
    assert nodes.partition_of(7) == 0 and nodes.label(impostor) == f"node {impostor}"
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == [f"node {impostor} refused: partition 0 is bound to another "
                       "SuperNode's public key. It is not sampled"]  # fmt: skip


def test_the_server_app_loads_the_registry_at_start_up(keys, tmp_path):
    # Prepare
    registry, _ = keys
    good = tiny_config("head", **{"server.partition-registry": str(registry)})
    bad = tiny_config("head", **{"server.partition-registry": str(tmp_path / "none.toml")})
    # Execute
    strategy = make_strategy(good, HEAD_REF)
    # Assert: the strategy's directory holds the keys; a missing file fails at start-up
    assert set(strategy.nodes.keys.keys) == {0, 1}
    with pytest.raises(ValueError, match=r"server.partition-registry=.*none.toml"):
        make_strategy(bad, HEAD_REF)
