"""HetLoRA: nodes at a smaller LoRA rank — truncation, padding, per-node checks, config."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedpeft import wire
from fedpeft.arrays import trainable_state
from fedpeft.codecs import CODECS, CodecParams
from fedpeft.config import ConfigError, NodeConfig, app_config, parse_node_config
from fedpeft.hetlora import node_rank, pad, truncate
from fedpeft.model import build_model
from fedpeft.tools.inprocess import InProcessGrid
from server_app.sampling import NodeDirectory
from server_app.strategy import PeftFedAvg
from server_app.validation import reference_specs
from tests.e2e.helpers import ROOT, TINY
from tests.fakes import FakeGrid, reply
from tests.runs import tiny_config

A, B = "blocks.0.attn.qkv.lora_A.default.weight", "blocks.0.attn.qkv.lora_B.default.weight"


def _global(seed: int = 0) -> dict[str, np.ndarray]:
    """One rank-4 LoRA layer (A 4×3, B 9×4) and a head, random."""
    rng = np.random.default_rng(seed)
    shapes = {A: (4, 3), B: (9, 4), "head.weight": (2, 3), "head.bias": (2,)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_pad_and_truncate_round_trip_bit_for_bit():
    # Prepare
    full = _global()
    part = truncate(_global(seed=1), 2)
    # Execute
    cut = truncate(full, 2)
    padded = pad(part, full, 2)
    # Assert: A keeps its first 2 rows, B its first 2 columns, the head is untouched;
    # each direction undoes the other exactly
    assert cut[A].shape == (2, 3) and cut[B].shape == (9, 2)
    assert cut["head.weight"].tobytes() == full["head.weight"].tobytes()
    assert all(truncate(padded, 2)[k].tobytes() == part[k].tobytes() for k in part)
    assert all(pad(cut, full, 2)[k].tobytes() == full[k].tobytes() for k in full)
    assert padded[A][2:].tobytes() == full[A][2:].tobytes()
    assert padded[B][:, 2:].tobytes() == full[B][:, 2:].tobytes()


def test_a_model_cut_to_a_smaller_rank_is_the_seeded_models_first_components():
    # Prepare: the run's rank-8 model with every LoRA tensor moved off its init
    cfg = tiny_config("lora", **{"peft.lora.federation": "ffa"})
    full = build_model(cfg.model, cfg.peft, 3, cfg.seed)
    cut = build_model(cfg.model, cfg.peft, 3, cfg.seed, rank=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in full.named_parameters():
            if ".lora_" in name:
                param.add_(torch.randn(param.shape, generator=g))
        for name, param in cut.named_parameters():
            if ".lora_" in name:
                param.copy_(full.get_parameter(name)[(slice(0, 3),) if ".lora_A." in name
                                                     else (slice(None), slice(0, 3))])  # fmt: skip
            elif param.requires_grad:
                param.copy_(full.get_parameter(name))
    x = torch.randn(2, 3, 32, 32)
    # Execute: the full model with B's components past rank 3 zeroed
    with torch.no_grad():
        for name, param in full.named_parameters():
            if ".lora_B." in name:
                param[:, 3:] = 0
        out_full, out_cut = full.eval()(x), cut.eval()(x)
    # Assert: the same function (same scale alpha / r); FFA's frozen A, built from the
    # seed, is the full model's first rows, so every node's A agrees with the server's
    assert torch.allclose(out_full, out_cut, atol=1e-5)
    fresh_full = build_model(cfg.model, cfg.peft, 3, cfg.seed)
    fresh_cut = build_model(cfg.model, cfg.peft, 3, cfg.seed, rank=3)
    a_full = dict(fresh_full.named_parameters())["blocks.0.attn.qkv.lora_A.default.weight"]
    a_cut = dict(fresh_cut.named_parameters())["blocks.0.attn.qkv.lora_A.default.weight"]
    assert torch.equal(a_cut, a_full[:3]) and not a_cut.requires_grad
    assert {tuple(p.shape) for n, p in trainable_state(fresh_cut).items() if ".lora_B." in n} == {
        (3 * 64, 3)
    }


def _strategy(glob: dict[str, np.ndarray]) -> PeftFedAvg:
    return PeftFedAvg(
        reference_specs(ArrayRecord({k: Array(v) for k, v in glob.items()})),
        min_train_nodes=2, min_available_nodes=2, nodes=NodeDirectory(0, max_rank=4),
    )  # fmt: skip


def _round(strategy: PeftFedAvg, glob: dict[str, np.ndarray], grid: FakeGrid) -> list[Message]:
    sent = list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in glob.items()}),
                                         ConfigRecord({"lr": 0.1}), grid))  # fmt: skip
    for i, msg in enumerate(sent):
        msg.metadata.__dict__["_message_id"] = f"id-{i}"
    return sent


def test_each_node_gets_its_rank_and_the_aggregate_is_fedavg_of_the_padded_replies():
    # Prepare: node 1 announced rank 2, node 2 trains the run's rank (4)
    glob = _global()
    strategy = _strategy(glob)
    grid = FakeGrid({1: 0, 2: 1}, {}, announce={1: {"lora-rank": 2}})
    sent = _round(strategy, glob, grid)
    by_node = {m.metadata.dst_node_id: m for m in sent}
    shapes = {n: {k: v.shape for k, v in m.content["arrays"].items()} for n, m in by_node.items()}
    low = {k: v + 1.0 for k, v in truncate(glob, 2).items()}
    high = {k: v - 0.5 for k, v in glob.items()}
    replies = [reply(by_node[1], low, 30), reply(by_node[2], high, 10)]
    # Execute
    new, _ = strategy.aggregate_train(1, replies)
    # Assert: node 1 was sent (and accepted at) rank 2, node 2 rank 4; the downlink
    # counts both records; the aggregate equals Flower's FedAvg over the replies
    # zero-padded in the update (the ranks node 1 does not train: as sent)
    assert shapes[1][A] == (2, 3) and shapes[1][B] == (9, 2)
    assert shapes[2][A] == (4, 3) and shapes[2][B] == (9, 4)
    assert strategy.rounds[1].accepted == 2 and strategy.rounds[1].sent_to == 2
    padded = [reply(by_node[1], pad(low, glob, 2), 30), reply(by_node[2], high, 10)]
    golden, _ = FedAvg().aggregate_train(1, padded)
    for key in glob:
        np.testing.assert_allclose(new[key].numpy(), golden[key].numpy(), rtol=1e-6)
    # rank 3 and 4 of A moved by node 2's update (-0.5) times its share of samples (1/4)
    np.testing.assert_allclose(new[A].numpy()[2:], glob[A][2:] - 0.125, rtol=1e-6)


def test_an_int8_update_is_decoded_at_the_nodes_rank_against_what_it_was_sent():
    # Prepare: comm.uplink = int8; node 1 (rank 2) replies with its encoded update
    glob = _global()
    codec = CODECS["int8"](CodecParams())
    strategy = PeftFedAvg(
        reference_specs(ArrayRecord({k: Array(v) for k, v in glob.items()})),
        min_train_nodes=2, min_available_nodes=2, nodes=NodeDirectory(0, max_rank=4),
        uplink=codec,
    )  # fmt: skip
    grid = FakeGrid({1: 0, 2: 1}, {}, announce={1: {"lora-rank": 2}})
    by_node = {m.metadata.dst_node_id: m for m in _round(strategy, glob, grid)}
    replies = []
    for node, rank in ((1, 2), (2, None)):
        received = truncate(glob, rank) if rank else glob
        trained = {k: v + 0.25 for k, v in received.items()}
        content = RecordDict({"arrays": wire.encode_update(trained, received, codec, None),
                              "metrics": MetricRecord({"num-examples": 10})})  # fmt: skip
        content[wire.COMM] = wire.announce(codec)
        replies.append(Message(content, reply_to=by_node[node]))
    # Execute
    new, _ = strategy.aggregate_train(1, replies)
    # Assert: both accepted; ranks 1-2 moved by +0.25, ranks 3-4 of A by half that
    # (node 2's share of the samples), within int8's error (half a scale: 0.25 / 254)
    assert strategy.rounds[1].accepted == 2, strategy.rounds[1].rejected
    np.testing.assert_allclose(new[A].numpy()[:2], glob[A][:2] + 0.25, atol=1e-3)
    np.testing.assert_allclose(new[A].numpy()[2:], glob[A][2:] + 0.125, atol=1e-3)


@pytest.mark.parametrize(("node", "rank"), [(1, 4), (2, 2)])
def test_a_reply_at_a_rank_the_node_did_not_announce_is_rejected(node, rank):
    # Prepare: node 1 announced rank 2, node 2 none (the run's 4); one replies at another
    glob = _global()
    strategy = _strategy(glob)
    grid = FakeGrid({1: 0, 2: 1}, {}, announce={1: {"lora-rank": 2}})
    by_node = {m.metadata.dst_node_id: m for m in _round(strategy, glob, grid)}
    honest = {1: truncate(glob, 2), 2: glob}
    replies = [reply(by_node[n], truncate(glob, rank) if n == node else honest[n], 10)
               for n in (1, 2)]  # fmt: skip
    # Execute
    new, _ = strategy.aggregate_train(1, replies)
    # Assert: the other reply made the round; this one was refused, naming the shapes
    assert new is not None and strategy.rounds[1].accepted == 1
    reason = strategy.rounds[1].rejected[node]
    assert "lora_A" in reason and "expected" in reason
    assert ("announced lora-rank is 2" in reason) == (node == 1)


@pytest.mark.parametrize("announced", [0, 5, -1, 2.0, [4]])
def test_a_node_announcing_an_unusable_rank_is_never_sampled(announced, caplog):
    # Prepare: three nodes, one announcing a rank outside [1, 4]
    glob = _global()
    strategy = _strategy(glob)
    grid = FakeGrid({1: 0, 2: 1, 3: 2}, {}, announce={3: {"lora-rank": announced}})
    # Execute
    with caplog.at_level(logging.WARNING):
        sent = _round(strategy, glob, grid)
    # Assert
    assert {m.metadata.dst_node_id for m in sent} == {1, 2}
    assert f"node 3 announced lora-rank {announced!r}" in caplog.text


def test_a_node_takes_its_rank_from_node_config_then_from_peft_lora_ranks():
    # Prepare
    cfg = tiny_config("lora", **{"peft.lora.ranks": "2,8,4"})
    plain = tiny_config("lora")

    # Execute / Assert: partition p gets ranks[p mod 3]; r itself is "no smaller rank";
    # node-config wins; other methods ignore it
    def node(pid: int, rank: int | None = None) -> NodeConfig:
        return NodeConfig(partition_id=pid, num_partitions=4, lora_rank=rank)

    assert [node_rank(cfg.peft, node(p)) for p in range(4)] == [2, None, 4, 2]
    assert node_rank(cfg.peft, node(0, 6)) == 6 and node_rank(plain.peft, node(0)) is None
    assert node_rank(tiny_config("bias").peft, node(0, 4)) is None
    with pytest.raises(ValueError, match=r"lora-rank=9.*\[1, peft.lora.r=8\]"):
        node_rank(plain.peft, node(0, 9))


@pytest.mark.parametrize("ranks", ["4,x", "0,8", "4,16", "4,,8"])
def test_a_bad_peft_lora_ranks_fails_at_start_up_naming_it(ranks):
    with pytest.raises((ConfigError, ValueError), match=rf"ranks='{ranks}'.*\[1, r=8\]"):
        tiny_config("lora", **{"peft.lora.ranks": ranks})


def test_node_config_lora_rank_must_be_a_positive_integer():
    base = {"partition-id": 0, "num-partitions": 2}
    assert parse_node_config({**base, "lora-rank": 4}).lora_rank == 4
    for bad in (0, "4", 2.5):
        with pytest.raises(ValueError, match="lora-rank"):
            parse_node_config({**base, "lora-rank": bad})


def test_the_query_reply_announces_a_smaller_rank_only():
    # Prepare: the ClientApp on two nodes of a simulation with peft.lora.ranks
    grid = InProcessGrid(app_config(ROOT, [TINY, "peft.lora.ranks='4,8'"]), 2)
    queries = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in (1, 2)]
    # Execute
    replies = grid.send_and_receive(queries)
    # Assert: partition 0 trains rank 4 and says so; partition 1 trains the run's r
    told = [dict(r.content.metric_records["node"]) for r in replies]
    assert told == [{"partition-id": 0, "num-partitions": 2, "lora-rank": 4},
                    {"partition-id": 1, "num-partitions": 2}]  # fmt: skip
