"""The poisoning guard: absurd updates refused with a reason, honest ones never."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.guard import default_guard, replay_committed
from fedpeft.config import ConfigError, ServerConfig, parse_run_config
from server_app.guard import Guard
from server_app.strategy import PeftFedAvg
from server_app.validation import model_norm, reference_specs
from tests.fakes import HEAD_REF, reply
from tests.test_strategy import _sent

DEFAULT = Guard(ServerConfig().guard__round_factor, ServerConfig().guard__model_factor)


def _honest(i: int) -> dict[str, np.ndarray]:
    """Honest-looking head updates (the reference is all zeros): norms 1.0-1.4."""
    g = np.random.default_rng(i)
    w = g.normal(size=(2, 3)).astype(np.float32)
    b = g.normal(size=2).astype(np.float32)
    scale = (1.0 + 0.1 * i) / math.sqrt(float((w**2).sum() + (b**2).sum()))
    return {"head.weight": w * scale, "head.bias": b * scale}


ATTACKS = {  # node → the update it sends
    10: {k: 10 * v for k, v in _honest(0).items()},  # an honest update scaled ×10
    11: {k: 100 * v for k, v in _honest(1).items()},  # ×100
    12: {k: np.full_like(v, 1e4) for k, v in _honest(0).items()},  # finite and huge
    13: {k: np.full_like(v, 1e30) for k, v in _honest(0).items()},
}


def _round(guard: Guard | None, updates: dict[int, dict[str, np.ndarray]]) -> PeftFedAvg:
    """One round of ``updates`` (node → arrays) through a strategy with ``guard``."""
    strategy = PeftFedAvg(reference=reference_specs(HEAD_REF), guard=guard,
                          min_train_nodes=1, min_available_nodes=1)  # fmt: skip
    by_node = {m.metadata.dst_node_id: m for m in _sent(strategy, sorted(updates))}
    strategy.aggregate_train(1, [reply(by_node[n], a, 10) for n, a in updates.items()])
    return strategy


def test_default_guard_refuses_scaled_and_filled_updates_and_keeps_the_honest():
    # Prepare: five honest clients and four attackers in one round
    updates = {i: _honest(i) for i in range(5)} | ATTACKS
    # Execute
    guarded = _round(DEFAULT, updates)
    unguarded = _round(None, updates)  # baseline: today's checks alone take all nine
    # Assert
    stats = guarded.rounds[1]
    assert unguarded.rounds[1].accepted == 9
    assert stats.accepted == 5 and set(stats.weights) == {"0", "1", "2", "3", "4"}
    reasons = stats.rejected
    assert "server.guard.round-factor" in reasons[10]  # ×10: 10 against a median 1.25
    for node in (11, 12, 13):  # ×100 (110), 1e4 and 1e30 fills: over 100 × max(‖sent‖, 1)
        assert "server.guard.model-factor" in reasons[node]
    assert stats.global_norm == 0.0  # the reference is all zeros


def test_one_or_two_replies_are_judged_by_the_model_bound_alone():
    # Prepare: the median of two is not robust (one attacker is half of it), so a round
    # of one or two replies has no round bound; the model bound is 100 × max(‖sent‖, 1)
    sent_norm = 2.0
    # Execute
    ten_times = DEFAULT.screen({1: 1.0, 2: 10.0}, sent_norm)
    huge = DEFAULT.screen({1: 1.0, 2: 201.0}, sent_norm)
    alone = DEFAULT.screen({1: model_norm(ATTACKS[13])}, sent_norm)
    # Assert
    assert ten_times == {}  # indistinguishable from an honest client with more data
    assert list(huge) == [2] and "model-factor" in huge[2]
    assert list(alone) == [1]


def test_identical_honest_updates_all_pass():
    norms = {n: 0.37 for n in range(8)}
    assert DEFAULT.screen(norms, sent_norm=5.0) == {}


def test_empty_updates_give_no_round_bound():
    # every client sent back what it got (norm 0): one that moved a little is no outlier
    assert DEFAULT.screen({1: 0.0, 2: 0.0, 3: 1e-3}, sent_norm=5.0) == {}


def test_the_model_bound_scales_with_the_global_model_and_has_a_floor():
    guard = Guard(round_factor=0.0, model_factor=100.0)
    assert guard.model_bound(50.0) == 5000.0
    assert guard.model_bound(0.0) == 100.0  # a zero-initialised trainable set
    assert Guard().model_bound(50.0) == math.inf  # off


@pytest.mark.parametrize(
    ("key", "value"),
    [("server.guard.round-factor", 0.5), ("server.guard.round-factor", -1.0),
     ("server.guard.model-factor", -1.0)],
)  # fmt: skip
def test_a_bad_guard_setting_fails_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"{key}={value}"):
        parse_run_config({key: value})


def test_zero_turns_each_bound_off():
    cfg = parse_run_config({"server.guard.round-factor": 0.0, "server.guard.model-factor": 0.0})
    guard = Guard(cfg.server.guard__round_factor, cfg.server.guard__model_factor)
    assert guard.screen({1: 1.0, 2: 1.0, 3: 1e30}, sent_norm=1.0) == {}


def test_the_replay_reads_nested_runs_and_lists_what_the_guard_refused_while_they_ran(tmp_path):
    # Prepare: a first-edition run (2 replies, no global norm: not judgeable) and a nested
    # second-edition run whose round 2 had a reply refused by the guard and one by validation
    def write(folder, rounds):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "metrics.json").write_text(json.dumps({"rounds": rounds}))

    write("old-s1", [{"round": 1, "update_norms": {"0": 1.0, "1": 2.0}}])
    guard_reason = (
        "update norm 1e+06 is over 100x the global model's norm 5 (server.guard.model-factor)"
    )
    write("r2/new-s1", [
        {"round": 1, "update_norms": {"0": 1.0, "1": 1.5}, "global_norm": 5.0},
        {"round": 2, "update_norms": {"1": 1.2}, "global_norm": 5.0,
         "rejections": {"0": guard_reason, "2": "array 'x' contains NaN or Inf"}},
    ])  # fmt: skip
    # and a run made with the guard off, which recorded a diverged update (2e5 × the global
    # norm)
    write("r2/off-s1", [{"round": 1, "update_norms": {"0": 1.0, "1": 1e6}, "global_norm": 5.0}])
    # Execute
    replay = replay_committed(default_guard(), tmp_path)
    # Assert: 4 rounds with norms, the 3 with a global norm judged, the diverged update
    # refused on replay and named by run; the guard's refusal in a run listed, the
    # validation's not
    assert {k: replay[k] for k in ("rounds_with_norms", "rounds_judged", "refused")} == {
        "rounds_with_norms": 4, "rounds_judged": 3, "refused": 1}  # fmt: skip
    assert replay["refused_by_run"] == {"r2/off-s1": 1}
    assert replay["refused_in_runs"] == [
        {"run": "r2/new-s1", "round": 2, "node": "0", "reason": guard_reason}
    ]
