"""SecAgg+: the unmasked sum is the plaintext sum, with and without drop-outs; masked vectors
hide their contributions; a node's state lives in a ConfigRecord; no torch on a node."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

from fedpeft import protocol
from fedpeft.secagg import SecAggError, SecAggParams, client, crypto, encoding, graph, server
from tests.conftest import ROOT
from tests.secagg_sim import PARAMS, Federation

# A SecAgg+ ring: 7 nodes, neighbourhoods of 3 (a node and one either side), threshold 2.
RING = SecAggParams(
    num_clients=7, num_shares=3, threshold=2, clipping_range=1.0, quantization_bits=20,
    modulus_bits=32, max_weight=10.0,
)  # fmt: skip


# 64-bit masks, 40-bit quantization: 5 x (2^40 - 1) < 2^64, uint64 on the wire
WIDE = SecAggParams(
    num_clients=5, num_shares=5, threshold=3, clipping_range=1.0, quantization_bits=40,
    modulus_bits=64, max_weight=10.0,
)  # fmt: skip


@pytest.mark.parametrize("params", [PARAMS, RING, WIDE], ids=["5-full", "7-ring-of-3", "64-bit"])
def test_unmasked_sum_is_the_plaintext_sum(params):
    # Prepare
    fed = Federation(params, n=params.num_clients, size=40)

    # Execute
    out = fed.run()
    total = server.unmask_sum(**out)
    vector, weight = server.aggregate(**out)

    # Assert: the integers are exactly the sum of the quantized contributions, and the
    # floats within the quantization bound: each entry is less than one step off, a step
    # being 2 * max_weight * clip / (2^q - 1) (1.9e-5 for q = 20; weights: 10 / (2^q - 1)),
    # so n contributions are less than n steps off.
    np.testing.assert_array_equal(total, fed.encoded(fed.ids))
    exact_vector, exact_weight = fed.plaintext(fed.ids)
    bound, weight_bound = encoding.error_bound(params, len(fed.ids))
    assert bound == pytest.approx(len(fed.ids) * 2 * 10.0 / params.quantization_max)
    assert next(iter(out["masked"].values())).dtype == params.dtype
    assert np.abs(vector - exact_vector).max() < bound
    assert abs(weight - exact_weight) < weight_bound
    assert np.abs(exact_vector).max() > 1.0  # not a sum of zeros


def test_neighbourhoods_form_a_ring():
    # Prepare
    ids = list(range(100, 107))

    # Execute
    hoods = graph.neighbourhoods(ids, RING, np.random.default_rng(0))

    # Assert: 3 nodes each, the node included; symmetric; each node in 3 neighbourhoods
    assert all(len(h) == 3 and i in h for i, h in hoods.items())
    assert all(i in hoods[j] for i, h in hoods.items() for j in h)
    assert sorted(j for h in hoods.values() for j in h) == sorted(ids * 3)


def test_masked_vector_is_uncorrelated_with_the_contribution():
    # Prepare: a ramp over the whole clipping range, weight 10: the quantized contribution
    # spans [0, 2^20 - 1] and has correlation 1 with the update it encodes.
    fed = Federation(PARAMS, n=5, size=20_000)
    node = fed.ids[0]
    fed.updates[node] = np.linspace(-1.0, 1.0, fed.size)
    fed.weights[node] = 10.0

    # Execute
    masked = fed.run()["masked"][node].astype(np.float64)
    contribution = fed.encoded([node]).astype(np.float64)

    # Assert: a uniform mask modulo 2^32 makes the masked vector independent of the
    # contribution; for independent vectors r * sqrt(n) is about N(0, 1), so with 20,001
    # values |r| < 0.1 is 14 standard deviations (0.007 each) from failing by chance.
    assert np.corrcoef(contribution[:-1], fed.updates[node])[0, 1] > 0.999
    assert abs(np.corrcoef(masked, contribution)[0, 1]) < 0.1


@pytest.mark.parametrize("stage", ["after-share-keys", "in-unmask"])
def test_a_dropped_node_is_unmasked_through_its_neighbours_shares(stage):
    # Prepare
    fed = Federation(PARAMS, n=5, size=30)
    gone = fed.ids[2]

    # Execute
    if stage == "after-share-keys":  # no masked vector: its pairwise masks come off via sk2
        out, summed = fed.run(drop_after_share_keys=[gone]), [i for i in fed.ids if i != gone]
    else:  # a masked vector, then silence: its seed comes from the others' shares
        out, summed = fed.run(drop_in_unmask=[gone]), fed.ids
    vector, weight = server.aggregate(**out)

    # Assert
    np.testing.assert_array_equal(server.unmask_sum(**out), fed.encoded(summed))
    exact_vector, exact_weight = fed.plaintext(summed)
    bound, weight_bound = encoding.error_bound(PARAMS, len(summed))
    assert np.abs(vector - exact_vector).max() < bound
    assert abs(weight - exact_weight) < weight_bound


def test_a_node_dropping_in_share_keys_is_left_out():
    # Prepare
    fed = Federation(PARAMS, n=5, size=30)
    gone = fed.ids[0]

    # Execute: the others seal shares for it; nothing of it is forwarded or masked with
    out = fed.run(drop_in_share_keys=[gone])

    # Assert
    assert gone not in out["routed"] and all(gone not in r for r in out["routed"].values())
    others = [i for i in fed.ids if i != gone]
    np.testing.assert_array_equal(server.unmask_sum(**out), fed.encoded(others))


def test_too_many_dropouts_after_share_keys_leave_nothing_to_unmask():
    # Prepare: 3 of 5 drop; threshold 3
    fed = Federation(PARAMS, n=5, size=10)
    public_keys = fed.setup()
    routed = graph.route(fed.share_keys(public_keys, fed.ids))
    masked = fed.masked(routed, fed.ids[:2])
    requests = graph.unmask_requests(routed, masked)

    # Execute / Assert: each survivor refuses (2 active < threshold 3), so no shares come
    # back, and the server cannot reconstruct a seed
    for node in masked:
        with pytest.raises(SecAggError, match="2 active neighbours, fewer than threshold 3"):
            fed.stage(node, client.unmask, *requests[node])
    with pytest.raises(SecAggError, match=rf"node {min(masked)}: mask seed: 0 shares"):
        server.aggregate(PARAMS, public_keys, routed, masked, {}, fed.size)


def test_too_many_silent_in_unmask_raise_naming_the_node():
    # Prepare: all 5 send masked vectors; only 2 answer the unmask stage (threshold 3)
    fed = Federation(PARAMS, n=5, size=10)

    # Execute
    out = fed.run(drop_in_unmask=fed.ids[2:])

    # Assert
    first = min(fed.ids)
    with pytest.raises(SecAggError, match=rf"node {first}: mask seed: 2 shares, fewer than"):
        server.aggregate(**out)


def test_node_state_is_a_configrecord_that_drops_spent_secrets():
    # Prepare
    fed = Federation(PARAMS, n=5, size=10)
    node = fed.ids[0]
    public_keys = fed.setup()
    routed = graph.route(fed.share_keys(public_keys, fed.ids))
    before = dict(fed.records[node])

    # Execute
    fed.masked(routed, fed.ids)
    after = fed.records[node]

    # Assert: the private keys and the seed are gone once the masked vector is out; the
    # node holds one share pair per neighbour, itself included
    assert isinstance(after, ConfigRecord)
    assert {protocol.SECAGG_SK1, protocol.SECAGG_SK2, protocol.SECAGG_SEED} <= set(before)
    assert not {protocol.SECAGG_SK1, protocol.SECAGG_SK2, protocol.SECAGG_SEED} & set(after)
    assert sorted(after[protocol.SECAGG_SHARE_OWNERS]) == sorted(fed.ids)
    assert after[protocol.SECAGG_STAGE] == protocol.SECAGG_MASKED_VECTOR


def test_masks_use_the_whole_seed_unlike_flowers_generator():
    # Prepare: two seeds whose 4-byte words XOR to the same 32-bit value
    a = bytes(range(32))
    b = bytes(range(4, 8)) + bytes(range(4)) + bytes(range(8, 32))

    # Execute
    flower_a, flower_b = (pseudo_rand_gen(s, 2**32, [(100,)])[0] for s in (a, b))
    ours_a, ours_b = (crypto.mask(s, 100, PARAMS) for s in (a, b))

    # Assert: Flower's generator gives both seeds one mask; ours does not
    np.testing.assert_array_equal(flower_a, flower_b)
    assert not np.array_equal(ours_a, ours_b)
    assert ours_a.dtype == np.uint64 and int(ours_a.max()) < 2**32


def test_the_key_stages_import_no_torch():
    # Prepare
    code = (
        "import sys; import fedpeft.secagg.client, fedpeft.secagg.server, fedpeft.secagg.graph; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )

    # Execute
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )

    # Assert
    assert out.stdout.strip() == "[]"
