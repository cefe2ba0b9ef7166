"""The round record: one schema written by the recorder, read by report and sweep."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord

from fedpeft.record import CSV_FIELDS, RoundRecord, RunRecord, read_run
from fedpeft.tools import report
from fedpeft.tools.sweep import load_sweep
from server_app import checkpoint
from server_app.recorder import RunRecorder
from server_app.rounds import RoundEnd
from server_app.strategy import PeftFedAvg
from server_app.validation import reference_specs
from tests.conftest import ROOT
from tests.fakes import CheckpointedRecorder, FakeGrid

COMMITTED = sorted((ROOT / "docs" / "results").rglob("metrics.json"))


def _same(a: object, b: object) -> bool:
    """Equal, NaN equal to NaN (a round server.evaluate-every skipped)."""
    nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return nan or a == b


def test_every_committed_metrics_file_reads_into_the_schema():
    # Prepare: the committed results, written before the schema existed
    assert len(COMMITTED) >= 50
    for path in COMMITTED:
        raw = json.loads(path.read_text())
        # Execute
        run = read_run(path)
        # Assert: every value the file holds comes back under its own name
        assert run.status == raw["status"] and run.config == raw["config"]
        for row, raw_row in zip(run.rounds, raw["rounds"], strict=True):
            assert all(_same(getattr(row, k), v) for k, v in raw_row.items()), raw_row["round"]


def test_report_of_the_committed_sweeps_matches_the_raw_files():
    # Prepare
    sweep = load_sweep(ROOT / "conf" / "sweep-cpu.toml")
    sweep = type(sweep)(**{**sweep.__dict__, "results": ROOT / sweep.results})
    # Execute
    rows = report.collect(sweep)
    # Assert: all 48 runs, each equal to what its file says
    assert len(rows) == 48
    for row in rows:
        raw = json.loads((sweep.results / row["run"] / "metrics.json").read_text())
        assert row["final_accuracy"] == raw["rounds"][-1]["accuracy"]
        assert row["total_bytes"] == raw["rounds"][-1]["cum_bytes"]


def test_an_unknown_field_is_refused_naming_it(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(
        json.dumps(
            {"status": "completed", "rounds": [{"round": 0, "accuracy": 0.1, "dp-epsilon": 1.0}]}
        )
    )
    with pytest.raises(ValueError, match=r"metrics.json: .*unknown field.*'dp-epsilon'"):
        read_run(path)


def test_epsilon_reads_central_local_and_old_client_reports():
    assert RoundRecord(round=1, accuracy=0.5, dp_epsilon=2.0).epsilon == 2.0
    assert RoundRecord(round=1, accuracy=0.5, dp_epsilon_max=3.0).epsilon == 3.0
    old = RoundRecord(round=1, accuracy=0.5, client_metrics=[{"dp-epsilon": 1.0},
                                                             {"dp-epsilon": 4.0}])  # fmt: skip
    assert old.epsilon == 4.0
    assert RoundRecord(round=1, accuracy=0.5).epsilon is None


def _end(server_round: int, accuracy: float, loss: float, **counts) -> RoundEnd:
    arrays = ArrayRecord({"w": Array(np.full(2, float(server_round), np.float32))})
    evaluation = MetricRecord({"accuracy": accuracy, "loss": loss})
    return RoundEnd(server_round, arrays, evaluation, counts, {"failed_streak": 0})


def test_recorder_writes_records_csv_and_checkpoint_from_the_round_end(tmp_path):
    # Prepare
    fingerprint = {"method": "head"}
    recorder = CheckpointedRecorder(tmp_path, RunRecord(run_id=7), 10, fingerprint)
    # Execute
    recorder.round_end(_end(0, 0.1, 2.3))
    recorder.round_end(_end(1, 0.5, 1.2, bytes_down=100, bytes_up=50, accepted=2, lr=0.01))
    recorder.round_end(_end(2, 0.2, math.inf, bytes_down=100, bytes_up=40, failed_round=True))
    recorder.finish("completed")
    # Assert: the file reads back into the same records
    run = read_run(tmp_path / "metrics.json")
    assert [r.cum_bytes for r in run.rounds] == [0, 150, 290]
    assert [r.at_chance for r in run.rounds] == [False, False, False]
    assert [r.diverged for r in run.rounds] == [False, False, True]
    assert run.rounds[1].lr == 0.01 and run.status == "completed"
    assert (run.final_accuracy, run.failed_rounds, run.total_bytes, run.diverged) == (
        0.2, 1, 290, True)  # fmt: skip
    with (tmp_path / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    assert tuple(header) == CSV_FIELDS
    ck = checkpoint.load(tmp_path, fingerprint)
    assert ck.server_round == 2 and ck.rows == [r.to_dict() for r in run.rounds]
    assert ck.strategy_state == {"failed_streak": 0}


def test_round_loop_hands_counts_lr_and_evaluation_to_the_recorder(tmp_path):
    # Prepare: two nodes, the server sends lr 0.3
    ref = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    strategy = PeftFedAvg(reference=reference_specs(ref), min_train_nodes=2,
                          min_available_nodes=2, fraction_evaluate=0.0, seed=1)  # fmt: skip
    behaviour = {n: (lambda sent, rnd: ({"w": sent["w"] + 1.0}, 10)) for n in (1, 2)}
    recorder = RunRecorder(tmp_path, RunRecord(), num_classes=2)

    def evaluate_fn(server_round, arrays):
        return MetricRecord({"accuracy": float(arrays["w"].numpy()[0]) / 10, "loss": 1.0})

    # Execute
    strategy.start(FakeGrid({1: 0, 2: 1}, behaviour), ref, num_rounds=2,
                   train_config=ConfigRecord({"lr": 0.3}), evaluate_fn=evaluate_fn,
                   recorder=recorder)  # fmt: skip
    # Assert
    rows = read_run(tmp_path / "metrics.json").rounds
    assert [r.round for r in rows] == [0, 1, 2]
    assert [r.accuracy for r in rows] == [0.0, 0.1, 0.2]
    assert [r.lr for r in rows] == [None, 0.3, 0.3]
    assert [r.accepted for r in rows] == [0, 2, 2]
    assert rows[1].weights == {"0": 10, "1": 10}
    assert rows[1].bytes_down > 0 and rows[1].cum_bytes == rows[1].bytes_down + rows[1].bytes_up


def test_the_checkpoint_step_follows_each_recorded_round(tmp_path):
    # Prepare: two nodes; the recorder and the checkpoint step close each round
    ref = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    strategy = PeftFedAvg(reference=reference_specs(ref), min_train_nodes=2,
                          min_available_nodes=2, fraction_evaluate=0.0, seed=1)  # fmt: skip
    behaviour = {n: (lambda sent, rnd: ({"w": sent["w"] + 1.0}, 10)) for n in (1, 2)}
    fingerprint = {"method": "head"}
    recorder = RunRecorder(tmp_path, RunRecord(), num_classes=2)
    # Execute
    strategy.start(FakeGrid({1: 0, 2: 1}, behaviour), ref, num_rounds=2, recorder=recorder,
                   checkpointer=checkpoint.Checkpointer(tmp_path, fingerprint))  # fmt: skip
    # Assert: the last round's arrays, the rows recorded and the steps' state
    ck = checkpoint.load(tmp_path, fingerprint)
    assert ck.server_round == 2 and ck.strategy_state == {"failed_streak": 0}
    assert ck.rows == [r.to_dict() for r in read_run(tmp_path / "metrics.json").rounds]
    np.testing.assert_array_equal(ck.arrays["w"].numpy(), [2.0, 2.0])
