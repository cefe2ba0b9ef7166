"""Central DP: clipped mean with a fixed denominator, seeded noise, ε, Flower's wrapper."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.privacy_accountant import NeighboringRelation as Relation
from dp_accounting.rdp import RdpAccountant
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore.privacy_accounting import (
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from opacus.accountants import RDPAccountant

from fedpeft.config import ConfigError, DpConfig
from server_app.central_dp import CentralDp
from server_app.strategy import PeftFedAvg
from server_app.validation import reference_specs
from tests.fakes import HEAD_REF, FakeGrid, head_update, reply

REF = HEAD_REF
_update = head_update


def _strategy(ref=REF, seed=3, **dp) -> PeftFedAvg:
    cfg = DpConfig(mode="central", **dp)
    return PeftFedAvg(
        reference=reference_specs(ref),
        min_train_nodes=1,
        min_available_nodes=1,
        central_dp=CentralDp(cfg, num_rounds=3, seed=seed),
    )


def _round(strategy, specs, nodes, server_round=1, ref=REF):
    """Sample ``nodes`` (all of them); reply for the (node, arrays, n) in ``specs``."""
    grid = FakeGrid({n: n for n in nodes}, {})
    sent = {
        m.metadata.dst_node_id: m
        for m in strategy.configure_train(server_round, ref, ConfigRecord(), grid)
    }
    for i, msg in enumerate(sent.values()):
        msg.metadata.__dict__["_message_id"] = f"id{server_round}-{i}"
    replies = [reply(sent[node], arrays, n) for node, arrays, n in specs]
    return strategy.aggregate_train(server_round, replies), sent


def test_noise_zero_gives_the_clipped_mean_over_the_sampled_clients():
    # Prepare: C = 1; node 1's update has norm 0.5·√8 = 1.414 (clipped), node 2's 0.1·√8 = 0.283
    strategy = _strategy(clip_norm=1.0, noise_multiplier=0.0)
    # Execute: weights 10 and 30 are ignored (uniform mean, fixed denominator m = 2)
    (arrays, _), _ = _round(strategy, [(1, _update(0.5), 10), (2, _update(0.1), 30)], [1, 2])
    # Assert
    expected = (0.5 / math.sqrt(0.25 * 8) + 0.1) / 2
    np.testing.assert_allclose(arrays["head.weight"].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(arrays["head.bias"].numpy(), -expected, rtol=1e-6)
    dp = strategy.rounds[1].dp
    assert dp["dp_clipped"] == 1 and dp["dp_noise_std"] == 0.0
    assert dp["dp_epsilon"] == math.inf  # σ = 0: no privacy, said so


def test_dropped_and_rejected_clients_count_as_zero_updates():
    # Prepare: 3 sampled; node 2 sends NaN (rejected by validation), node 3 never replies
    strategy = _strategy(clip_norm=10.0, noise_multiplier=0.0)
    nan = {k: np.full_like(v, np.nan) for k, v in _update(1.0).items()}
    # Execute
    (arrays, _), _ = _round(strategy, [(1, _update(0.3), 5), (2, nan, 5)], [1, 2, 3])
    # Assert: denominator stays m = 3 (public), so one client's influence is at most C/3
    np.testing.assert_allclose(arrays["head.weight"].numpy(), 0.3 / 3, rtol=1e-6)
    assert strategy.rounds[1].accepted == 1 and 2 in strategy.rounds[1].rejected


def test_seeded_noise_has_std_sigma_c_over_m_and_is_reproducible():
    # Prepare: 20,000 coordinates, all clients send the global model back (zero update)
    big = ArrayRecord({"w": Array(np.zeros(20_000, dtype=np.float32))})
    zero = {"w": np.zeros(20_000, dtype=np.float32)}
    runs = []
    for seed in (3, 3, 4):
        strategy = _strategy(big, seed=seed, clip_norm=2.0, noise_multiplier=1.5)
        # Execute
        (arrays, _), _ = _round(strategy, [(1, zero, 1), (2, zero, 1)], [1, 2], ref=big)
        runs.append(arrays["w"].numpy())
    # Assert: std σ·C/m = 1.5·2/2 = 1.5; the sample std of 20,000 normals is within
    # 1.5·(1 ± 0.03) (its own std is 1.5/√40000 = 0.5%, so 3% is 6 standard errors)
    assert runs[0].std() == pytest.approx(1.5, rel=0.03)
    assert abs(runs[0].mean()) < 6 * 1.5 / math.sqrt(20_000)
    assert runs[0].tobytes() == runs[1].tobytes()  # same seed, same round: same noise
    assert runs[0].tobytes() != runs[2].tobytes()


def test_epsilon_per_round_is_cumulative_and_matches_the_accountant():
    # Prepare: 4 nodes, exactly 2 sampled per round without replacement; σ = 1.2
    strategy = PeftFedAvg(
        reference=reference_specs(REF), min_train_nodes=1, min_available_nodes=1,
        fraction_train=0.5, seed=1,
        central_dp=CentralDp(DpConfig(mode="central", noise_multiplier=1.2), 3, seed=1),
    )  # fmt: skip
    grid = FakeGrid({n: n for n in range(4)}, {n: lambda s, r: (s, 1) for n in range(4)})
    # Execute
    strategy.start(grid, REF, num_rounds=3)
    # Assert: dp-accounting, replace-one, 2 of 4 without replacement, noise multiplier
    # σ/2 (a sum of updates clipped to C moves by 2C when one client is swapped)
    reported = [strategy.rounds[r].dp["dp_epsilon"] for r in (1, 2, 3)]
    for rounds, eps in enumerate(reported, start=1):
        independent = RdpAccountant(neighboring_relation=Relation.REPLACE_ONE)
        wor = dp_event.SampledWithoutReplacementDpEvent(4, 2, dp_event.GaussianDpEvent(0.6))
        independent.compose(wor, rounds)
        assert eps == pytest.approx(independent.get_epsilon(1e-5), rel=1e-12)
    assert reported[0] < reported[1] < reported[2]
    assert [strategy.rounds[r].dp["dp_sample_rate"] for r in (1, 2, 3)] == [0.5] * 3
    # the releases survive a checkpoint round-trip
    again = CentralDp(DpConfig(mode="central", noise_multiplier=1.2), 3, seed=1)
    again.load_state(strategy.state()["central_dp"])
    assert again.releases == strategy.central_dp.releases
    assert again.spent()["dp_epsilon"] == reported[-1]


def test_without_sampling_epsilon_is_the_gaussian_at_sensitivity_2c():
    # Prepare: all 3 clients every round (no amplification); Opacus's add/remove RDP
    # of the Gaussian mechanism at σ/2 is the same bound, computed independently
    dp = CentralDp(DpConfig(mode="central", noise_multiplier=1.2, delta=1e-3), 4, seed=0)
    zero = {"w": np.zeros(2, np.float32)}
    update = types.SimpleNamespace(arrays=zero, weight=1, node_id=1, partition_id=0)
    opacus = RDPAccountant()
    # Execute / Assert
    for r in (1, 2, 3, 4):
        info = dp.aggregate([update], zero, 3, 3, r)[1]
        opacus.step(noise_multiplier=0.6, sample_rate=1.0)
        assert info["dp_epsilon"] == pytest.approx(opacus.get_epsilon(1e-3), rel=1e-9)
    # sampling 1 of 3 instead amplifies: the same σ spends less (11.60 vs 16.63 here)
    sampled = CentralDp(DpConfig(mode="central", noise_multiplier=1.2, delta=1e-3), 4, seed=0)
    eps_sampled = [sampled.aggregate([update], zero, 1, 3, r)[1]["dp_epsilon"] for r in range(4)]
    assert eps_sampled[-1] < 0.8 * info["dp_epsilon"]


def test_an_older_poisson_accountant_checkpoint_is_not_continued():
    # Prepare: a Poisson accountant's state (Opacus history at q = m/N)
    dp = CentralDp(DpConfig(mode="central"), 3, seed=0)
    # Execute / Assert
    with pytest.raises(ValueError, match="older format"):
        dp.load_state({"history": [[1.0, 0.5, 1]], "sigma": 1.0})


def test_central_dp_takes_only_the_rdp_accountant():
    with pytest.raises(ConfigError, match=r"dp\.accountant.*'prv'.*without replacement"):
        DpConfig(mode="central", accountant="prv")


def test_calibrated_sigma_meets_the_target_over_the_planned_rounds():
    # Prepare: 2 of 4 clients over 3 planned rounds, target ε = 5 at δ = 1e-3
    dp = CentralDp(DpConfig(mode="central", calibrate=True, epsilon=5.0, delta=1e-3), 3, 0)
    zero = {"w": np.zeros(2, np.float32)}
    update = types.SimpleNamespace(arrays=zero, weight=1, node_id=1, partition_id=0)
    # Execute
    infos = [dp.aggregate([update], zero, 2, 4, r)[1] for r in (1, 2, 3)]
    # Assert: at most the target, and close to it (dp-accounting's search: σ within 1e-6)
    assert 4.99 <= infos[-1]["dp_epsilon"] <= 5.0


def test_flowers_wrapper_refuses_our_strategy_and_skips_rounds_on_errors():
    # Flower 1.42's DifferentialPrivacyServerSideFixedClipping (why we have our own).
    # Prepare
    config = PrivacyConfig(1e-5, 4, NeighboringRelation.ADD_OR_REMOVE_ONE,
                           SamplingMethod.NO_AMPLIFICATION)  # fmt: skip
    accountant = types.SimpleNamespace(config=config)
    ours = PeftFedAvg(reference=reference_specs(REF), min_train_nodes=1, min_available_nodes=1)
    # Execute / Assert: with an accountant it needs FedAvg's own aggregate_train
    with pytest.raises(ValueError, match=r"requires a strategy using FedAvg\.aggregate_train"):
        DifferentialPrivacyServerSideFixedClipping(ours, 1.0, 1.0, 2, accountant=accountant)
    # Without one, a single error reply skips the whole round's aggregation
    wrapper = DifferentialPrivacyServerSideFixedClipping(FedAvg(), 1.0, 1.0, 2)
    sent = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in (1, 2)]
    good = reply(sent[0], _update(0.1), 1)
    bad = Message(Error(code=0, reason="dropped"), reply_to=sent[1])
    assert wrapper.aggregate_train(1, [good, bad]) == (None, None)
