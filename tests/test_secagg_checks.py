"""SecAgg+ rejects what breaks the protocol, naming the problem: bad parameters, keys,
ciphertexts, unmask requests, masked vectors and shares; a rejected stage changes nothing."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fedpeft import protocol
from fedpeft.secagg import (
    SecAggError,
    SecAggParams,
    client,
    crypto,
    encoding,
    graph,
    inputs,
    server,
)
from fedpeft.secagg import shares as sharing
from fedpeft.secagg.state import from_record, neighbours
from tests.secagg_sim import PARAMS, Federation, rounding_rng

BASE = {"num_clients": 5, "num_shares": 5, "threshold": 3}


@pytest.mark.parametrize(
    ("name", "value", "others"),
    [
        ("num_clients", 1, {"num_shares": 1, "threshold": 1}),
        ("num_shares", 6, {}),
        ("num_shares", 4, {"num_clients": 7}),  # even, below num_clients: no ring
        ("num_shares", True, {}),
        ("threshold", 6, {}),  # above num_shares
        ("threshold", 2, {}),  # 2 * 2 <= 5: a server could collect both of a node's secrets
        ("clipping_range", 0.0, {}),
        ("clipping_range", float("inf"), {}),
        ("max_weight", -1.0, {}),
        ("quantization_bits", 49, {}),
        ("modulus_bits", 65, {}),
        ("modulus_bits", 24, {"quantization_bits": 22}),  # 5 x (2^22 - 1) >= 2^24
    ],
)  # fmt: skip
def test_params_validation_names_the_parameter_and_value(name, value, others):
    # Prepare
    kwargs = {**BASE, **others, name: value}

    # Execute
    with pytest.raises(ValueError, match=rf"parameter {name} must be") as info:
        SecAggParams(**kwargs)

    # Assert
    assert f"got {value!r}" in str(info.value)


def test_params_travel_as_config_values():
    # Prepare
    config = PARAMS.to_config()

    # Execute
    back = SecAggParams.from_config(config)

    # Assert
    assert back == PARAMS and config[protocol.SECAGG_THRESHOLD] == 3
    with pytest.raises(ValueError, match=protocol.SECAGG_MAX_WEIGHT):
        SecAggParams.from_config({k: v for k, v in config.items() if k != "secagg-max-weight"})


@pytest.fixture
def keyed():
    """5 nodes after setup, with their public keys."""
    fed = Federation(PARAMS, n=5, size=8)
    return fed, fed.setup()


@pytest.mark.parametrize(
    ("case", "match"),
    [
        pytest.param("own-missing", "its own id is missing", id="own-missing"),
        pytest.param("own-altered", "its own public keys are listed altered", id="own-altered"),
        pytest.param("duplicate", "some public keys are identical", id="duplicate"),
        pytest.param(
            "too-few", r"2 neighbours \(itself included\), outside \[threshold=3", id="too-few"
        ),
        pytest.param("unparseable", "public key does not parse", id="unparseable"),
    ],
)
def test_share_keys_refuses_bad_public_keys(keyed, case, match):
    # Prepare
    fed, public_keys = keyed
    a, b, c = fed.ids[:3]
    keys = dict(public_keys)
    if case == "own-missing":
        del keys[a]
    elif case == "own-altered":
        keys[a] = (keys[b][0], keys[a][1])
    elif case == "duplicate":
        keys[c] = keys[b]
    elif case == "too-few":
        keys = {a: keys[a], b: keys[b]}
    else:
        keys[c] = (b"junk", keys[c][1])

    # Execute / Assert
    with pytest.raises(SecAggError, match=match):
        fed.stage(a, client.share_keys, keys)


@pytest.fixture
def routed():
    """5 nodes after the share-keys stage; the ciphertexts as sent and as forwarded."""
    fed = Federation(PARAMS, n=5, size=8)
    sent = fed.share_keys(fed.setup(), fed.ids)
    return fed, sent, graph.route(sent)


def _sealed_by(fed, src, dst, named_src, named_dst):
    """A ciphertext under the key ``src`` and ``dst`` agreed, naming other ids inside."""
    state = from_record(fed.records[src])
    key = crypto.agree(state[protocol.SECAGG_SK1], neighbours(state)[dst][0])
    seed_share, sk2_share = (
        state[protocol.SECAGG_SEED_SHARES][0],
        state[protocol.SECAGG_SK2_SHARES][0],
    )
    return sharing.seal(key, named_src, named_dst, seed_share, sk2_share)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        pytest.param(
            "tampered", "from node {a} does not decrypt under their agreed key", id="tampered"
        ),
        pytest.param(
            "other-destination",
            "from node {a} does not decrypt under their agreed key",
            id="other-destination",
        ),
        pytest.param(
            "names-other-destination",
            "from node {a} names node {c} as its destination",
            id="names-other-destination",
        ),
        pytest.param(
            "names-other-source",
            "from node {a} names node {c} as its source",
            id="names-other-source",
        ),
        pytest.param(
            "replayed", "the ciphertexts from nodes {a} and {c} are one ciphertext", id="replayed"
        ),
        pytest.param(
            "from-itself", "a ciphertext from node {b}, not a neighbour", id="from-itself"
        ),
    ],
)
def test_masked_vector_refuses_bad_ciphertexts_and_changes_nothing(routed, case, match):
    # Prepare: node b receives what node a sent (or something in its place)
    fed, sent, forwarded = routed
    a, b, c = fed.ids[:3]
    inbox = dict(forwarded[b])
    if case == "tampered":
        text = bytearray(inbox[a])
        text[60] ^= 1
        inbox[a] = bytes(text)
    elif case == "other-destination":
        inbox[a] = sent[a][c]
    elif case == "names-other-destination":
        inbox[a] = _sealed_by(fed, a, b, a, c)
    elif case == "names-other-source":
        inbox[a] = _sealed_by(fed, a, b, c, b)
    elif case == "replayed":
        inbox[c] = inbox[a]
    else:
        inbox[b] = inbox[a]
    before = dict(fed.records[b])
    args = (fed.updates[b], fed.weights[b], rounding_rng(b))

    # Execute / Assert: refused; the state as it was; the true inbox still works
    with pytest.raises(SecAggError, match=match.format(a=a, b=b, c=c)):
        fed.stage(b, client.masked_vector, inbox, *args)
    assert dict(fed.records[b]) == before
    assert fed.stage(b, client.masked_vector, forwarded[b], *args).dtype == np.uint32


def test_masked_vector_refuses_a_replayed_stage(routed):
    # Prepare
    fed, _, forwarded = routed
    node = fed.ids[0]
    args = (forwarded[node], fed.updates[node], fed.weights[node], rounding_rng(node))
    fed.stage(node, client.masked_vector, *args)

    # Execute / Assert
    with pytest.raises(SecAggError, match="needs stage 'share-keys' just before it"):
        fed.stage(node, client.masked_vector, *args)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        pytest.param("both", "listed both active and dropped", id="both"),
        pytest.param("itself-dropped", "the node itself is listed dropped", id="itself-dropped"),
        pytest.param("stranger", r"holds no shares of nodes \[12345\]", id="stranger"),
        pytest.param("twice", "needs stage 'masked-vector' just before it", id="twice"),
    ],
)
def test_unmask_refuses_bad_requests(routed, case, match):
    # Prepare
    fed, _, forwarded = routed
    fed.masked(forwarded, fed.ids)
    a, b, c, d, e = fed.ids
    active, dropped = {
        "both": ([a, b, c, d], [d]),
        "itself-dropped": ([b, c, d], [a]),
        "stranger": ([a, b, c], [12345]),
        "twice": ([a, b, c, d, e], []),
    }[case]
    if case == "twice":
        fed.stage(a, client.unmask, active, dropped)

    # Execute / Assert
    with pytest.raises(SecAggError, match=match):
        fed.stage(a, client.unmask, active, dropped)


@pytest.fixture
def finished():
    """A full run with one node dropped after share keys (so both kinds of share return)."""
    fed = Federation(PARAMS, n=5, size=8)
    out = fed.run(drop_after_share_keys=[fed.ids[4]])
    return fed, out


def test_server_refuses_bad_masked_vectors():
    # Prepare: a 20-bit modulus in uint32 entries, so a value can be out of range
    params = SecAggParams(**BASE, quantization_bits=16, modulus_bits=20)
    fed = Federation(params, n=5, size=8)
    out = fed.run()
    node = fed.ids[1]
    good = out["masked"][node]
    cases = {
        "shape": (good[:-1], r"masked vector of shape \(8,\), not \(9,\)"),
        "dtype": (good.astype(np.int64), "masked vector of int64, not uint32"),
        "range": (np.full_like(good, 2**20), r"masked vector has values >= 2\*\*20"),
    }

    # Execute / Assert
    for vector, match in cases.values():
        masked = {**out["masked"], node: vector}
        with pytest.raises(SecAggError, match=rf"node {node}: {match}"):
            server.aggregate(**{**out, "masked": masked})


@pytest.mark.parametrize(
    ("case", "match"),
    [
        pytest.param("truncated", "node {owner}: mask seed: a share is malformed", id="truncated"),
        pytest.param("corrupted", "node {owner}: mask seed: shares do not combine", id="corrupted"),
        pytest.param(
            "twice-in-a-reply",
            "node {responder}: returned two shares of one node",
            id="twice-in-a-reply",
        ),
        pytest.param(
            "copied-from-another",
            "node {owner}: mask seed: two shares with one index",
            id="copied-from-another",
        ),
        pytest.param(
            "unasked", "node {responder}: returned a share of node 12345, unasked", id="unasked"
        ),
        pytest.param(
            "not-a-survivor",
            "node {gone}: replied to the unmask stage, not a survivor",
            id="not-a-survivor",
        ),
        pytest.param(
            "wrong-pk2",
            "node {gone}: the reconstructed mask key does not match its pk2",
            id="wrong-pk2",
        ),
    ],
)
def test_server_refuses_bad_shares(finished, case, match):
    # Prepare: responder's reply; its first entry is owner's seed share
    fed, out = finished
    replies = {k: (list(ids), list(s)) for k, (ids, s) in out["replies"].items()}
    public_keys = dict(out["public_keys"])
    responder, other, gone = fed.ids[0], fed.ids[1], fed.ids[4]
    ids, shares = replies[responder]
    owner = ids[0]
    if case == "truncated":
        shares[0] = shares[0][:-1]
    elif case == "corrupted":
        shares[0] = shares[0][:4] + bytes(b ^ 0xFF for b in shares[0][4:])
    elif case == "twice-in-a-reply":
        ids.append(ids[0])
        shares.append(shares[0])
    elif case == "copied-from-another":
        shares[0] = replies[other][1][replies[other][0].index(owner)]
    elif case == "unasked":
        ids.append(12345)
        shares.append(shares[0])
    elif case == "not-a-survivor":
        replies[gone] = ([owner], [shares[0]])
    else:
        public_keys[gone] = (public_keys[gone][0], public_keys[other][1])

    # Execute / Assert
    with pytest.raises(
        SecAggError, match=match.format(owner=owner, responder=responder, gone=gone)
    ):
        server.aggregate(**{**out, "replies": replies, "public_keys": public_keys})


def test_routing_refuses_replays_and_drops_one_way_pairs(routed):
    # Prepare
    fed, sent, _ = routed
    a, b, c = fed.ids[:3]
    replayed = {**sent, b: {**sent[b], c: sent[a][c]}}
    one_way = {**sent, b: {k: v for k, v in sent[b].items() if k != a}}

    # Execute
    with pytest.raises(
        SecAggError, match=f"node {b}: its ciphertext for node {c} repeats node {a}'s"
    ):
        graph.route(replayed)
    forwarded = graph.route(one_way)

    # Assert: neither direction of the one-way pair is forwarded; the others are
    assert a not in forwarded[b] and b not in forwarded[a] and c in forwarded[a]


def test_an_unmasked_sum_out_of_range_means_a_mask_was_left_in():
    # Prepare: what a sum with a mask left in looks like: uniform over [0, 2^32)
    total = crypto.mask(b"\x01" * 32, 9, PARAMS)

    # Execute / Assert: 5 contributions sum to at most 5 x (2^20 - 1)
    with pytest.raises(SecAggError, match="masks were not all removed"):
        encoding.decode(PARAMS, total, 5)


def test_a_weight_above_max_weight_is_refused():
    # Prepare
    update = np.zeros(4)

    # Execute / Assert
    with pytest.raises(ValueError, match=re.escape("weight must be in [0, max_weight=10.0]")):
        encoding.encode(PARAMS, update, 10.5, np.random.default_rng(0))


def test_lists_off_the_wire_refuse_a_repeated_node():
    # Prepare: a ConfigRecord carries (sources, ciphertexts) as two lists
    sources, texts = [7, 9, 7], [b"a", b"b", b"c"]

    # Execute / Assert
    assert inputs.by_node(sources[:2], texts[:2], "node 1: ciphertexts") == {7: b"a", 9: b"b"}
    with pytest.raises(SecAggError, match=r"node 1: ciphertexts: node 7 listed twice"):
        inputs.by_node(sources, texts, "node 1: ciphertexts")
    with pytest.raises(SecAggError, match="2 node ids for 3 values"):
        inputs.by_node(sources[:2], texts, "node 1: ciphertexts")
