"""LoRA federation variants (``peft.lora.federation``): what trains and what travels.

The real ``flwr run`` of each: FFA-LoRA's (it learns; A never travels) is
``tests/e2e/test_robustness.py``'s; FedSA-LoRA's are ``tests/e2e/test_dp.py``'s
(simulation: B kept in Context.state) and ``tests/e2e/test_deploy.py``'s first run
(deployment; it learns); RoLoRA's are ``tests/e2e/test_compression.py``'s (it learns)
and ``tests/e2e/test_resume.py``'s (it resumes on the right parity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vit
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedpeft.arrays import NPY_HEADER_BYTES, to_arrayrecord, trainable_state, wire_bytes
from fedpeft.model import build_model
from fedpeft.server_opt import OptParams, make_optimizer
from fedpeft.sharing import (
    LOCAL,
    keep_local,
    restore_local,
    shared_state,
    sharing_of,
    training_round,
    uplink_names,
)
from peft_strategies import get_method
from peft_strategies.base import ViTDims
from peft_strategies.lora import FEDERATIONS, LoraMethodConfig
from server_app.strategy import PeftFedAvg
from server_app.validation import reference_specs
from tests.fakes import FakeGrid, reply
from tests.runs import tiny_config

HEAD = {"head.weight", "head.bias"}


def _lora(federation: str, seed: int = 0) -> tuple[torch.nn.Module, LoraMethodConfig]:
    model = tiny_vit()
    torch.manual_seed(seed)  # as fedpeft.model.build_model seeds before the method
    cfg = LoraMethodConfig(federation=federation)
    get_method("lora").apply(model, cfg)
    return model, cfg


def test_ffa_trains_and_sends_b_and_the_head_only():
    # Prepare
    model, cfg = _lora("ffa")
    dims = ViTDims.of(tiny_vit())
    # Execute
    sent = trainable_state(model)
    # Assert: every B and the head, no A; the count is the method's formula
    assert not [k for k in sent if ".lora_A." in k]
    lora_b = [n for n, _ in model.named_parameters() if ".lora_B." in n]
    assert set(sent) == set(lora_b) | {"head.weight", "head.bias"}
    assert sum(v.numel() for v in sent.values()) == get_method("lora").num_trainable(dims, cfg)


def test_ffa_sends_three_quarters_of_the_factor_bytes_on_the_fused_qkv():
    # Prepare: the factors alone (the head travels in both), with distinct values so no
    # array is deduplicated on the wire
    def factors(federation: str) -> dict[str, torch.Tensor]:
        model, _ = _lora(federation)
        return {k: torch.randn_like(v) for k, v in trainable_state(model).items()
                if ".lora_" in k}  # fmt: skip

    ffa, fedavg = factors("ffa"), factors("fedavg")
    # Execute
    raw = {name: sum(v.numel() * 4 for v in s.values()) for name, s in
           (("ffa", ffa), ("fedavg", fedavg))}  # fmt: skip
    on_wire = wire_bytes(to_arrayrecord(ffa))
    b_of_fedavg = {k: v for k, v in fedavg.items() if ".lora_B." in k}
    # Assert: B (3·dim × r) is three times A (r × dim), so 75% of the factors' bytes; on
    # the wire exactly what fedavg's B tensors alone take (the per-tensor framing included)
    assert raw["ffa"] / raw["fedavg"] == 0.75
    assert on_wire == wire_bytes(to_arrayrecord(b_of_fedavg))
    assert on_wire - raw["ffa"] >= len(ffa) * NPY_HEADER_BYTES  # the header per tensor


def test_ffa_keeps_a_identical_on_every_client_through_training():
    # Prepare: two clients build from the run's seed
    first, _ = _lora("ffa", seed=42)
    second, _ = _lora("ffa", seed=42)
    a_before = {n: p.detach().clone() for n, p in first.named_parameters() if ".lora_A." in n}
    # Execute: one step on the first client
    opt = torch.optim.SGD([p for p in first.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(first(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    # Assert: A is non-zero, the same on both clients, and unchanged by training
    a_second = {n: p for n, p in second.named_parameters() if ".lora_A." in n}
    assert a_before and all(a.abs().sum() > 0 for a in a_before.values())
    for name, a in first.named_parameters():
        if ".lora_A." in name:
            assert torch.equal(a, a_before[name]) and torch.equal(a, a_second[name]), name


def test_an_unknown_federation_names_the_choices():
    with pytest.raises(ValueError, match=r"federation='fedsa2'.*\['fedavg', 'ffa', 'fedsa', "
                                         r"'rolora'\]"):  # fmt: skip
        LoraMethodConfig(federation="fedsa2")
    assert list(FEDERATIONS) == ["fedavg", "ffa", "fedsa", "rolora"]


def _factor_bytes(model: torch.nn.Module, names: frozenset[str] | set[str]) -> int:
    return sum(p.numel() * 4 for n, p in model.named_parameters() if n in names and ".lora_" in n)


def _shared(federation: str) -> tuple[torch.nn.Module, frozenset[str], LoraMethodConfig]:
    model, cfg = _lora(federation)
    sharing = get_method("lora").sharing(cfg)
    return model, frozenset(shared_state(model, sharing)), cfg


def test_fedsa_shares_a_and_the_head_and_rolora_alternates_b_then_a():
    # Prepare
    fedavg_model, fedavg, _ = _shared("fedavg")
    everything = _factor_bytes(fedavg_model, fedavg)
    a = {k for k in fedavg if ".lora_A." in k}
    b = {k for k in fedavg if ".lora_B." in k}
    # Execute
    fedsa_model, fedsa, _ = _shared("fedsa")
    rolora_model, rolora, rolora_cfg = _shared("rolora")
    rolora_sharing = get_method("lora").sharing(rolora_cfg)
    turns = [uplink_names(rolora, rolora_sharing, r) for r in (1, 2, 3, 4)]
    # Assert: FedSA's server holds A and the head (B trains, but stays on the client): a
    # quarter of the factor bytes; RoLoRA's holds all, but replies carry B + head in odd
    # rounds (75%) and A + head in even ones (25%)
    assert fedsa == a | HEAD
    assert [n for n, p in fedsa_model.named_parameters() if p.requires_grad] == list(
        n for n, _ in fedavg_model.named_parameters() if n in fedavg
    )  # FedSA trains the same tensors as plain LoRA
    assert _factor_bytes(fedsa_model, fedsa) / everything == 0.25
    assert rolora == fedavg
    assert turns == [b | HEAD, a | HEAD, b | HEAD, a | HEAD]
    assert [_factor_bytes(rolora_model, t) / everything for t in turns[:2]] == [0.75, 0.25]


def test_rolora_trains_only_the_rounds_factor_and_thaws_the_other_after():
    # Prepare: B off its zero init, so that A has a gradient
    model, cfg = _lora("rolora")
    sharing = get_method("lora").sharing(cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.normal_()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Execute: one SGD step inside round 2 (A's turn)
    with training_round(model, sharing, 2):
        inside = set(trainable_state(model))
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    # Assert: only A and the head trained, and both moved; B is trainable again after
    a = {n for n in before if ".lora_A." in n}
    assert inside == a | HEAD
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) == (name not in inside), name
    assert set(trainable_state(model)) == inside | {n for n in before if ".lora_B." in n}


def _rolora_strategy(ref: dict[str, np.ndarray]) -> PeftFedAvg:
    sharing = get_method("lora").sharing(LoraMethodConfig(federation="rolora"))
    return PeftFedAvg(
        reference_specs(ArrayRecord({k: Array(v) for k, v in ref.items()})),
        min_train_nodes=2, min_available_nodes=2,
        optimizer=make_optimizer("fedadam", OptParams(lr=0.1)),
        sharing=sharing,
    )  # fmt: skip


def test_rolora_server_aggregates_the_rounds_factor_and_keeps_the_other_bit_for_bit():
    # Prepare: a global model of one A, one B and a head; FedAdam (its momentum must not
    # move the factor that was not sent); two nodes reply in rounds 1 and 2
    a, b = "blocks.0.attn.qkv.lora_A.default.weight", "blocks.0.attn.qkv.lora_B.default.weight"
    glob = {
        a: np.full((2, 4), 0.5, np.float32),
        b: np.zeros((6, 2), np.float32),
        "head.weight": np.ones((3, 4), np.float32),
        "head.bias": np.zeros(3, np.float32),
    }
    strategy = _rolora_strategy(glob)
    grid = FakeGrid({1: 1, 2: 2}, {})
    history = []
    for server_round in (1, 2):
        arrays = ArrayRecord({k: Array(v) for k, v in glob.items()})
        sent = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        for i, msg in enumerate(sent):
            msg.metadata.__dict__["_message_id"] = f"id{server_round}-{i}"
        carried = strategy.carried.of(server_round)
        replies = [reply(m, {k: glob[k] + (i + 1) for k in carried}, 10)
                   for i, m in enumerate(sent)]  # fmt: skip
        # Execute
        new, _ = strategy.aggregate_train(server_round, replies)
        new = {k: v.numpy() for k, v in new.items()}
        history.append((set(carried), new, dict(glob)))
        glob = new
    # Assert: each round's replies carry that round's factor and the head only; the
    # factor not sent is unchanged bit for bit, the one sent moved
    (first_keys, first, before_1), (second_keys, second, before_2) = history
    assert first_keys == {b} | HEAD and second_keys == {a} | HEAD
    assert first[a].tobytes() == before_1[a].tobytes() and not np.array_equal(first[b], before_1[b])
    assert second[b].tobytes() == before_2[b].tobytes()
    assert not np.array_equal(second[a], before_2[a])


def test_a_rolora_reply_with_the_resting_factor_is_rejected_by_name():
    # Prepare: round 1 is B's turn; one reply also carries A
    a, b = "blocks.0.attn.qkv.lora_A.default.weight", "blocks.0.attn.qkv.lora_B.default.weight"
    glob = {
        a: np.zeros((2, 4), np.float32),
        b: np.zeros((6, 2), np.float32),
        "head.weight": np.ones((3, 4), np.float32),
        "head.bias": np.zeros(3, np.float32),
    }
    strategy = _rolora_strategy(glob)
    arrays = ArrayRecord({k: Array(v) for k, v in glob.items()})
    sent = list(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid({1: 1, 2: 2}, {})))
    for i, msg in enumerate(sent):
        msg.metadata.__dict__["_message_id"] = f"id-{i}"
    honest = {k: v + 1 for k, v in glob.items() if k != a}
    # Execute
    new, _ = strategy.aggregate_train(
        1, [reply(sent[0], honest, 10), reply(sent[1], {**honest, a: glob[a] + 1}, 10)]
    )
    # Assert: the honest reply made the round; the other was refused, naming A
    assert new is not None and strategy.rounds[1].accepted == 1
    (reason,) = strategy.rounds[1].rejected.values()
    assert a in reason


def test_fedsa_keeps_each_clients_b_in_its_own_state_on_a_shared_model():
    # Prepare: one cached model (as a Ray worker has) running two clients in turn
    cfg = tiny_config("lora", **{"peft.lora.federation": "fedsa"})
    model = build_model(cfg.model, cfg.peft, 3, cfg.seed)
    sharing = get_method("lora").sharing(cfg.peft.params)
    b_names = [n for n, _ in model.named_parameters() if ".lora_B." in n]
    initial = {n: model.get_parameter(n).detach().clone() for n in b_names}
    x_state, y_state = RecordDict(), RecordDict()

    def train(seed: int) -> dict[str, torch.Tensor]:  # stands in for local SGD on B
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name in b_names:
                model.get_parameter(name).add_(torch.randn(initial[name].shape, generator=g))
        return {n: model.get_parameter(n).detach().clone() for n in b_names}

    # Execute: x trains in round 1, y in round 1, then x again in round 2
    x_first = (restore_local(model, sharing, x_state), train(1))
    keep_local(model, sharing, x_state)
    y_first = (restore_local(model, sharing, y_state), {n: model.get_parameter(n).clone()
                                                        for n in b_names})  # fmt: skip
    train(2)
    keep_local(model, sharing, y_state)
    x_again = restore_local(model, sharing, x_state)
    # Assert: both start from the seeded init (zero B, peft's default); y does not see
    # x's B on the shared model; x gets its own B back; the server's set holds no B
    assert (x_first[0], y_first[0], x_again) == (False, False, True)
    for name in b_names:
        assert torch.equal(y_first[1][name], initial[name]) and not initial[name].any()
        assert torch.equal(model.get_parameter(name), x_first[1][name])
    assert set(x_state.array_records[LOCAL]) == set(b_names)
    assert not [k for k in shared_state(model, sharing) if ".lora_B." in k]


def test_a_local_state_that_does_not_fit_the_model_is_refused_by_name():
    # Prepare: a state whose B has the wrong shape (another rank)
    cfg = tiny_config("lora", **{"peft.lora.federation": "fedsa"})
    model = build_model(cfg.model, cfg.peft, 3, cfg.seed)
    sharing = get_method("lora").sharing(cfg.peft.params)
    state = RecordDict()
    keep_local(model, sharing, state)
    name = next(iter(state.array_records[LOCAL]))
    state.array_records[LOCAL][name] = Array(np.zeros((1, 1), np.float32))
    # Execute / Assert
    with pytest.raises(ValueError, match=rf"Context.state\['{LOCAL}'\].*{name}.*shape"):
        restore_local(model, sharing, state)


@pytest.mark.parametrize("method", ["bias", "adapter", "lora"])
def test_a_local_head_stays_on_the_client_for_any_method(method):
    # Prepare: peft.head.local, on one model that a client trains a step of
    cfg = tiny_config(method, **{"peft.head.local": True})
    model = build_model(cfg.model, cfg.peft, 3, cfg.seed)
    sharing = sharing_of(cfg.peft)
    state = RecordDict()
    # Execute
    shared = shared_state(model, sharing)
    restore_local(model, sharing, state)
    initial = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    trained = model.head.weight.detach().clone()
    keep_local(model, sharing, state)
    restore_local(model, sharing, RecordDict())  # another client, never trained
    fresh = model.head.weight.detach().clone()
    restore_local(model, sharing, state)
    # Assert: the server holds no head; a new client starts from timm's init, this one
    # gets its own head back
    assert shared and not [k for k in shared if k.startswith("head.")]
    assert set(state.array_records[LOCAL]) == HEAD
    assert torch.equal(fresh, initial) and torch.equal(model.head.weight, trained)
