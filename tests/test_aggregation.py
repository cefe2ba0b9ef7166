"""Aggregation rules: golden values, and one poisoned client against each rule."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.aggregation import RULES, RuleParams, Update


def _updates(values: list[float], weights: list[int] | None = None) -> list[Update]:
    weights = weights or [1] * len(values)
    return [
        Update({"w": np.full(3, v, np.float32)}, w, node_id=i, partition_id=i)
        for i, (v, w) in enumerate(zip(values, weights, strict=True))
    ]


def test_median_golden():
    out = RULES["median"](_updates([1.0, 9.0, 2.0, 4.0, 3.0]), RuleParams())
    np.testing.assert_array_equal(out["w"], np.full(3, 3.0, np.float32))


def test_trimmed_mean_golden():
    # β = 0.2 of 5 values cuts one at each end: mean(2, 3, 4) = 3
    out = RULES["trimmed-mean"](_updates([1.0, 100.0, 2.0, 4.0, 3.0]), RuleParams(trim_beta=0.2))
    np.testing.assert_allclose(out["w"], 3.0)


def test_krum_picks_the_update_closest_to_its_neighbours():
    # n = 5, f = 1: score = sum of the n − f − 2 = 2 smallest squared distances (× 3 coords):
    # 1.0 → (1 + 2.25)·3, 2.0 → (0.25 + 1)·3, 2.5 → (0.25 + 0.25)·3, 3.0 → (0.25 + 1)·3
    out = RULES["krum"](_updates([1.0, 2.0, 3.0, 50.0, 2.5]), RuleParams(byzantine=1))
    np.testing.assert_array_equal(out["w"], np.full(3, 2.5, np.float32))


def test_multi_krum_averages_the_best_updates_with_weights():
    # keep n − f = 4 of 5 (50.0 is dropped), then the sample-weighted mean
    updates = _updates([1.0, 2.0, 3.0, 50.0, 2.0], [1, 1, 2, 100, 0 + 4])
    out = RULES["multi-krum"](updates, RuleParams(byzantine=1))
    np.testing.assert_allclose(out["w"], (1 + 2 + 6 + 8) / 8)


def test_krum_refuses_too_many_assumed_attackers():
    with pytest.raises(ValueError, match="needs at least 7 accepted replies"):
        RULES["krum"](_updates([1.0, 2.0, 3.0, 4.0, 5.0]), RuleParams(byzantine=2))


HONEST = [0.9, 1.0, 1.1, 1.05, 0.95, 1.0, 0.98]  # updates around 1.0; mean = 0.997


@pytest.mark.parametrize("attack", ["scaled", "sign-flipped"])
@pytest.mark.parametrize(
    ("rule", "params"),
    [
        ("median", RuleParams()),
        ("trimmed-mean", RuleParams(trim_beta=0.2)),
        ("krum", RuleParams(byzantine=1)),
        ("multi-krum", RuleParams(byzantine=1)),
    ],
)
def test_one_poisoned_client_pulls_fedavg_but_not_robust_rules(attack, rule, params):
    # Prepare: the global model was at 0; honest clients moved to ≈1; the attacker
    # sends its update scaled by 100 or sign-flipped and scaled by 100.
    poison = 100.0 if attack == "scaled" else -100.0
    updates = _updates([*HONEST, poison])
    honest_mean = float(np.mean(HONEST))
    # Execute
    fedavg = RULES["fedavg"](updates, RuleParams())["w"]
    robust = RULES[rule](updates, params)["w"]
    # Assert: FedAvg lands > 10 away from the honest mean; the robust rule within 0.1
    assert np.all(np.abs(fedavg - honest_mean) > 10)
    assert np.all(np.abs(robust - honest_mean) < 0.1)
