"""PeftFedAvg.start: failed rounds, consecutive-failure stop, resuming at a round."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from server_app.strategy import PeftFedAvg, RoundsFailedError
from server_app.validation import reference_specs
from tests.fakes import FakeGrid

REF = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})


def _honest(step: float):
    return lambda sent, rnd: ({"w": sent["w"] + step}, 10)


def _nan(sent, rnd):
    return {"w": np.full(2, np.nan, np.float32)}, 10


def _strategy(**kwargs) -> PeftFedAvg:
    return PeftFedAvg(
        reference=reference_specs(REF),
        min_train_nodes=1,
        min_available_nodes=1,
        fraction_evaluate=0.0,
        seed=5,
        **kwargs,
    )


def test_failed_round_keeps_the_global_state_and_the_run_goes_on():
    # Prepare: round 2 only gets NaN (node 1 turns bad in round 2 only)
    def flaky(sent, rnd):
        return _nan(sent, rnd) if rnd == 2 else ({"w": sent["w"] + 1.0}, 10)

    grid = FakeGrid({1: 0}, {1: flaky})
    ends = []
    # Execute
    result = _strategy().start(
        grid, REF, num_rounds=3, on_round_end=lambda r, a: ends.append((r, a["w"].numpy()[0]))
    )
    # Assert: rounds 1 and 3 add 1.0 each; round 2 left the state at 1.0
    assert ends == [(1, 1.0), (2, 1.0), (3, 2.0)]
    np.testing.assert_array_equal(result.arrays["w"].numpy(), [2.0, 2.0])


def test_consecutive_failed_rounds_stop_the_run_with_a_clear_error():
    grid = FakeGrid({1: 0}, {1: _nan})
    ends = []
    with pytest.raises(RoundsFailedError, match="2 consecutive failed rounds"):
        _strategy(max_failed_rounds=2).start(
            grid, REF, num_rounds=5, on_round_end=lambda r, a: ends.append(r)
        )
    assert ends == [1, 2]  # both failed rounds were recorded before stopping


def test_resuming_at_round_three_equals_the_uninterrupted_run():
    # Prepare: 4 nodes, half sampled each round (seeded by partition id)
    behaviour = {n: _honest(0.1 * (n + 1)) for n in range(4)}
    full = _strategy(fraction_train=0.5).start(
        FakeGrid({n: n for n in range(4)}, behaviour), REF, num_rounds=4
    )
    first = _strategy(fraction_train=0.5).start(
        FakeGrid({n: n for n in range(4)}, behaviour), REF, num_rounds=2
    )
    # Execute: a "new run" whose nodes have other ids but the same partitions
    new_ids = {100 + n: n for n in range(4)}
    resumed = _strategy(fraction_train=0.5).start(
        FakeGrid(new_ids, {100 + n: b for n, b in behaviour.items()}),
        first.arrays,
        num_rounds=4,
        first_round=3,
    )
    # Assert
    assert resumed.arrays["w"].numpy().tobytes() == full.arrays["w"].numpy().tobytes()
