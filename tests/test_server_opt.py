"""Server optimizers: golden values against Flower's, state through resume, lr defaults."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi

from fedpeft.config import ConfigError, TrainConfig, declared_keys, parse_run_config
from fedpeft.schedules import lr_schedule
from fedpeft.server_opt import OPTIMIZERS, OptParams, make_optimizer
from server_app import checkpoint
from server_app.strategy import PeftFedAvg
from server_app.validation import reference_specs
from tests.fakes import FakeGrid

REF = ArrayRecord({
    "head.weight": Array(np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)),
    "head.bias": Array(np.zeros(3, dtype=np.float32)),
})  # fmt: skip
PARTITIONS = {11: 0, 12: 1, 13: 2}


def _behaviour(node: int):
    weight = 10 * PARTITIONS[node] + 10

    def train(sent, rnd):
        rng = np.random.default_rng(1000 * node + rnd)  # drawn in key order: a checkpoint
        noise = {k: 0.1 * rng.normal(size=sent[k].shape) for k in sorted(sent)}  # sorts keys
        # replies keep the sent order (Flower's FedAvgM pairs tensors by position)
        return {k: (v + noise[k]).astype(v.dtype) for k, v in sent.items()}, weight

    return train


def _grid() -> FakeGrid:
    return FakeGrid(PARTITIONS, {n: _behaviour(n) for n in PARTITIONS})


COMMON = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_train_nodes": 3,
          "min_available_nodes": 3}  # fmt: skip


def _ours(name: str, params: OptParams, **kwargs) -> PeftFedAvg:
    return PeftFedAvg(reference_specs(REF), seed=1, optimizer=make_optimizer(name, params),
                      **COMMON, **kwargs)  # fmt: skip


GOLDEN = [
    ("fedavg", FedAvg(**COMMON), OptParams()),
    ("fedavgm", FedAvgM(**COMMON, server_learning_rate=0.7, server_momentum=0.9),
     OptParams(lr=0.7, momentum=0.9)),
    ("fedadam", FedAdam(**COMMON, eta=0.05, beta_1=0.9, beta_2=0.99, tau=1e-3),
     OptParams(lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3)),
    ("fedyogi", FedYogi(**COMMON, eta=0.02, beta_1=0.8, beta_2=0.95, tau=1e-2),
     OptParams(lr=0.02, beta1=0.8, beta2=0.95, tau=1e-2)),
    ("fedadagrad", FedAdagrad(**COMMON, eta=0.1, tau=1e-3), OptParams(lr=0.1, tau=1e-3)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "flower", "params"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_each_optimizer_equals_flowers_strategy_over_three_rounds(name, flower, params):
    # Prepare: the same nodes, replies and weights for both
    ours = _ours(name, params)
    # Execute
    theirs = flower.start(_grid(), REF, num_rounds=3).arrays
    mine = ours.start(_grid(), REF, num_rounds=3).arrays
    # Assert: to 1e-6 (Flower computes partly in float64, we keep float32 tensors)
    for key in REF:
        assert mine[key].numpy().dtype == np.float32
        np.testing.assert_allclose(mine[key].numpy(), theirs[key].numpy(), rtol=0, atol=1e-6)
        assert not np.allclose(mine[key].numpy(), REF[key].numpy())  # it moved


def test_every_registered_optimizer_has_a_golden_test():
    assert sorted(OPTIMIZERS.names()) == sorted(g[0] for g in GOLDEN)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_state_through_a_checkpoint_resumes_bit_identically(tmp_path, name):
    # Prepare: 4 rounds straight, and 2 rounds + checkpoint + a new strategy for 3-4
    params = OptParams(lr=0.05, momentum=0.9)
    full = _ours(name, params).start(_grid(), REF, num_rounds=4).arrays
    first = _ours(name, params)
    arrays = first.start(_grid(), REF, num_rounds=2).arrays
    checkpoint.save(tmp_path, arrays, 2, {"fingerprint": {}, "strategy": first.state()},
                    first.state_arrays())  # fmt: skip
    # Execute
    ck = checkpoint.load(tmp_path, {})
    resumed = _ours(name, params)
    resumed.load_state(ck.strategy_state, ck.state_arrays)
    out = resumed.start(_grid(), ck.arrays, num_rounds=4, first_round=3).arrays
    # Assert
    assert set(ck.state_arrays) == set(first.state_arrays()) != set()
    for key in REF:
        assert out[key].numpy().tobytes() == full[key].numpy().tobytes()


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_declares_its_own_finite_default_lr(name):
    cls = OPTIMIZERS[name]
    assert "default_lr" in vars(cls)  # not inherited: a new optimizer must choose one
    assert 0 < cls.default_lr < math.inf


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_server_lr_resolves_to_the_optimizers_default_and_an_explicit_value_wins(name):
    # Execute: no server.lr, the sentinel 0 (pyproject's default) and an explicit value
    unset = parse_run_config({"server.optimizer": name})
    zero = parse_run_config({"server.optimizer": name, "server.lr": 0.0})
    explicit = parse_run_config({"server.optimizer": name, "server.lr": 0.5})
    # Assert: the parsed config holds the lr in use, which the strategy is built from
    assert unset.server.lr == zero.server.lr == OPTIMIZERS[name].default_lr
    assert explicit.server.lr == 0.5


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_on_full_fine_tuning_server_lr_resolves_to_the_backbone_default(name):
    # Execute
    full = parse_run_config({"server.optimizer": name, "peft.method": "full"})
    explicit = parse_run_config({"server.optimizer": name, "peft.method": "full", "server.lr": 0.5})
    # Assert: FedAdagrad's 0.01 diverges full fine-tuning (docs/RESULTS.md), the others
    # keep their default
    cls = OPTIMIZERS[name]
    assert full.server.lr == (0.001 if name == "fedadagrad" else cls.default_lr)
    assert full.server.lr == cls.default_lr_for(trains_backbone=True)
    assert explicit.server.lr == 0.5


def test_server_lr_help_states_every_registered_default():
    # Prepare
    (doc,) = [d for d in declared_keys() if d.key == "server.lr"]
    # Execute
    stated = {name: f"{name} {OPTIMIZERS[name].default_lr:g}" for name in OPTIMIZERS}
    stated |= {f"{name} on full": f"{cls.default_lr_backbone:g} for full"
               for name in OPTIMIZERS if (cls := OPTIMIZERS[name]).default_lr_backbone}  # fmt: skip
    # Assert: docs/CONFIG.md's table (generated from the help) agrees with the classes
    assert doc.default == 0.0
    assert {name: text for name, text in stated.items() if text not in doc.help} == {}


def test_unknown_optimizer_state_is_refused():
    opt = make_optimizer("fedadam", OptParams())
    with pytest.raises(ValueError, match="unknown slot 'momentum'"):
        opt.load_state({"momentum/head.bias": np.zeros(3)})


@pytest.mark.parametrize(
    ("flat", "pattern"),
    [
        ({"server.optimizer": "sgd"}, r"server.optimizer='sgd'.*fedadam"),
        ({"server.lr": -0.1}, r"server.lr=-0.1"),
        ({"server.lr": math.nan}, r"server.lr=nan"),
        ({"server.lr": math.inf}, r"server.lr=inf"),
        ({"server.beta2": 1.0}, r"server.beta2=1.0.*\[0, 1\)"),
        ({"server.tau": -1.0}, r"server.tau=-1.0"),
        ({"train.lr-schedule": "linear"}, r"train.lr-schedule='linear'.*cosine"),
        ({"train.lr-gamma": 0.0}, r"train.lr-gamma=0.0"),
        ({"train.lr-step-rounds": 0}, r"train.lr-step-rounds=0"),
    ],
)
def test_bad_optimizer_and_schedule_values_name_the_key(flat, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_run_config(flat)


def test_schedule_values_per_round():
    # Prepare: base lr 0.1 over 6 rounds, 2 of them warm-up
    def lrs(**kw):
        at = lr_schedule(TrainConfig(**kw), 0.1, 6)
        return [at(r) for r in range(1, 7)]

    # Execute / Assert
    assert lrs() == pytest.approx([0.1] * 6)
    cos = [0.05, 0.1] + [0.1 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs(lr_schedule="cosine", warmup_rounds=2) == pytest.approx(cos)
    step = [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert lrs(lr_schedule="step", lr_step_rounds=2, lr_gamma=0.5) == pytest.approx(step)
    assert min(lrs(lr_schedule="cosine")) > 0  # the last round still trains


def test_the_strategy_sends_each_rounds_lr():
    # Prepare
    at = lr_schedule(TrainConfig(lr_schedule="step", lr_step_rounds=1, lr_gamma=0.5), 0.2, 3)
    strategy = _ours("fedavg", OptParams(), lr_at=at)
    grid = _grid()
    # Execute
    strategy.start(grid, REF, num_rounds=3)
    # Assert: what was sent, and what the round stats (the record's lr) say
    sent = sorted({(int(m.content["config"]["server-round"]), m.content["config"]["lr"])
                   for m in grid.sent if m.metadata.message_type == "train"})  # fmt: skip
    assert sent == [(1, 0.2), (2, 0.1), (3, 0.05)]
    assert [strategy.rounds[r].lr for r in (1, 2, 3)] == [0.2, 0.1, 0.05]
