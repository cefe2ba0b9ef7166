"""What a run leaves besides metrics: best and every-N-th round tensors, TensorBoard, curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord
from safetensors.numpy import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedpeft import curves
from fedpeft.config import ConfigError, OutputConfig, parse_run_config
from fedpeft.record import RoundRecord, RunRecord, read_run
from server_app import checkpoint
from server_app.recorder import BEST_FILE, RunRecorder, round_file
from server_app.rounds import RoundEnd
from server_app.tensorboard_events import TB_DIR
from tests.conftest import ROOT
from tests.fakes import CheckpointedRecorder

FINGERPRINT = {"method": "head"}
COUNTS = {"clients": 3, "accepted": 2, "rejected": 1, "bytes_down": 100, "bytes_up": 40}


def _end(server_round: int, accuracy: float, **counts) -> RoundEnd:
    """Round ``server_round`` of a fake run: its tensors are filled with the round number."""
    arrays = ArrayRecord({"w": Array(np.full(3, float(server_round), np.float32)),
                          "b": Array(np.arange(2, dtype=np.float32) + server_round)})  # fmt: skip
    evaluation = MetricRecord({"accuracy": accuracy, "loss": 1.0})
    return RoundEnd(server_round, arrays, evaluation, counts, {"failed_streak": 0})


def _record(recorder: RunRecorder, accuracies: list[float], first: int = 0, **counts) -> None:
    for server_round, accuracy in enumerate(accuracies[first:], start=first):
        recorder.round_end(_end(server_round, accuracy, **(counts if server_round else {})))


def _tensors_of_round(path, server_round: int) -> bool:
    want = {k: v.numpy() for k, v in _end(server_round, 0.0).arrays.items()}
    got = load_file(str(path))
    return got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize(
    ("accuracies", "best"),
    [
        ([0.1, 0.4, 0.7, 0.7, 0.5], 2),  # the earliest of a tie
        ([0.6, 0.2, 0.6, math.nan], 0),  # round 0 counts; NaN never wins
    ],
)
def test_best_round_tensors_are_those_of_the_highest_accuracy(tmp_path, accuracies, best):
    # Prepare
    recorder = RunRecorder(tmp_path, RunRecord(), num_classes=10)
    # Execute
    _record(recorder, accuracies, **COUNTS)
    recorder.finish("completed")
    # Assert
    assert _tensors_of_round(tmp_path / BEST_FILE, best)
    run = read_run(tmp_path / "metrics.json")
    assert (run.best_round, run.best_accuracy) == (best, accuracies[best])


def test_a_metrics_file_without_best_fields_still_reads():
    # Prepare / Execute
    run = RunRecord.from_dict({"status": "completed", "rounds": [{"round": 0, "accuracy": 0.1}]})
    # Assert
    assert run.best_round is None and run.best_accuracy is None
    assert "best_round" not in RunRecord().to_dict()


def test_best_round_survives_checkpoint_and_resume_like_an_uninterrupted_run(tmp_path):
    # Prepare: an uninterrupted run, and one "killed" after checkpointing round 2 that had
    # already written round 3's better tensors as its best
    accuracies = [0.1, 0.5, 0.3, 0.6, 0.2]
    full, killed = tmp_path / "full", tmp_path / "killed"
    _record(CheckpointedRecorder(full, RunRecord(), 10, FINGERPRINT), accuracies, **COUNTS)
    _record(CheckpointedRecorder(killed, RunRecord(), 10, FINGERPRINT), accuracies[:3], **COUNTS)
    stale = RunRecorder(tmp_path / "stale", RunRecord(), 10)
    _record(stale, accuracies[:4], **COUNTS)
    (tmp_path / "stale" / BEST_FILE).replace(killed / BEST_FILE)
    # Execute: resume the way server_app.app does
    ck = checkpoint.load(killed, FINGERPRINT)
    rows = [RoundRecord.from_dict(r) for r in ck.rows]
    output = OutputConfig(run_name="killed", resume=True)
    resumed = CheckpointedRecorder(killed, RunRecord(rounds=rows), 10, FINGERPRINT, output)
    best_on_resume = load_file(str(killed / BEST_FILE))
    _record(resumed, accuracies, first=3, **COUNTS)
    # Assert: the checkpoint kept round 1, apart from the global tensors
    assert ck.best is not None and ck.best.server_round == 1
    assert set(ck.arrays.keys()) == {"w", "b"} and ck.server_round == 2
    assert np.array_equal(ck.best.arrays["w"].numpy(), np.full(3, 1.0, np.float32))
    assert np.array_equal(best_on_resume["w"], np.full(3, 1.0, np.float32))
    # ... and the resumed run ends like the uninterrupted one
    assert _tensors_of_round(killed / BEST_FILE, 3) and _tensors_of_round(full / BEST_FILE, 3)
    assert (resumed.run.best_round, resumed.run.best_accuracy) == (3, 0.6)
    assert checkpoint.load(killed, FINGERPRINT).best.server_round == 3


def test_save_every_keeps_exactly_the_nth_rounds(tmp_path):
    # Prepare
    recorder = RunRecorder(tmp_path, RunRecord(), 10, output=OutputConfig(save_every=2))
    # Execute
    _record(recorder, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], **COUNTS)
    # Assert: rounds 2 and 4, not round 0 (the initial model) nor 1, 3, 5
    kept = sorted(p.name for p in tmp_path.glob("round_*"))
    assert kept == [round_file(2), round_file(4)] == ["round_2_trainable.safetensors",
                                                      "round_4_trainable.safetensors"]  # fmt: skip
    assert _tensors_of_round(tmp_path / round_file(2), 2)
    assert _tensors_of_round(tmp_path / round_file(4), 4)


def test_save_every_is_off_by_default_and_negative_fails_naming_the_key(pyproject_config):
    # Prepare
    defaults = OutputConfig()
    # Execute / Assert
    assert defaults.save_every == 0 and defaults.tensorboard is False
    with pytest.raises(ConfigError, match=r"output.save-every=-1: must be >= 0"):
        parse_run_config({**pyproject_config, "output.save-every": -1})


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / TB_DIR))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_round_the_server_did_not_evaluate_has_no_accuracy_event(tmp_path):
    # Prepare: server.evaluate-every = 2 over 3 rounds (round 1's evaluation is None)
    recorder = RunRecorder(tmp_path, RunRecord(), 10, output=OutputConfig(tensorboard=True))
    # Execute
    for server_round, accuracy in enumerate([0.1, None, 0.5, 0.6]):
        end = _end(server_round, accuracy or 0.0, **(COUNTS if server_round else {}))
        if accuracy is None:
            end.evaluation.clear()
        recorder.round_end(end)
    recorder.finish("completed")
    # Assert: no accuracy or loss at step 1, the bytes at every step; not diverged
    scalars = _scalars(tmp_path)
    assert [step for step, _ in scalars["server/accuracy"]] == [0, 2, 3]
    assert [step for step, _ in scalars["server/loss"]] == [0, 2, 3]
    assert [step for step, _ in scalars["bytes/cumulative_up"]] == [0, 1, 2, 3]
    assert not recorder.run.diverged and recorder.run.best_round == 3


def test_tensorboard_events_hold_one_scalar_per_round_per_tag(tmp_path):
    # Prepare: central DP spends ε from round 1
    recorder = RunRecorder(tmp_path, RunRecord(), 10, output=OutputConfig(tensorboard=True))
    accuracies = [0.1, 0.4, 0.5, 0.45]
    # Execute
    for server_round, accuracy in enumerate(accuracies):
        counts = {**COUNTS, "lr": 0.01, "dp_epsilon": 0.5 * server_round} if server_round else {}
        recorder.round_end(_end(server_round, accuracy, **counts))
    recorder.finish("completed")
    # Assert
    scalars = _scalars(tmp_path)
    every_round = {"server/accuracy", "server/loss", "bytes/cumulative_down",
                   "bytes/cumulative_up", "replies/accepted", "replies/rejected",
                   "replies/failed", "replies/no_reply", "time/round_seconds"}  # fmt: skip
    assert set(scalars) == every_round | {"train/lr", "dp/epsilon"}
    for tag in every_round:
        assert [step for step, _ in scalars[tag]] == [0, 1, 2, 3], tag
    assert [s for s, _ in scalars["dp/epsilon"]] == [s for s, _ in scalars["train/lr"]] == [1, 2, 3]
    assert [v for _, v in scalars["server/accuracy"]] == pytest.approx(accuracies)
    assert [v for _, v in scalars["bytes/cumulative_down"]] == [0, 100, 200, 300]
    assert [v for _, v in scalars["bytes/cumulative_up"]] == [0, 40, 80, 120]
    assert [v for _, v in scalars["replies/rejected"]] == [0, 1, 1, 1]
    assert [v for _, v in scalars["dp/epsilon"]] == [0.5, 1.0, 1.5]


def test_a_resumed_run_replaces_the_tensorboard_rounds_it_repeats(tmp_path):
    # Prepare: rounds 0-2 written, the checkpoint holds round 1 (killed in round 2)
    output = OutputConfig(tensorboard=True)
    first = CheckpointedRecorder(tmp_path, RunRecord(), 10, FINGERPRINT, output)
    _record(first, [0.1, 0.2], **COUNTS)
    ck_file = tmp_path / checkpoint.FILENAME
    after_round_1 = ck_file.read_bytes()
    first.round_end(_end(2, 0.99, **COUNTS))  # the killed run's round 2 ...
    ck_file.write_bytes(after_round_1)  # ... killed before its checkpoint was replaced
    first.events.close()
    for events in (tmp_path / TB_DIR).iterdir():  # named as an earlier process would have
        stamp = events.name.split(".")[3]
        events.rename(events.with_name(events.name.replace(stamp, f"{int(stamp) - 1:010d}", 1)))
    # Execute
    ck = checkpoint.load(tmp_path, FINGERPRINT)
    rows = [RoundRecord.from_dict(r) for r in ck.rows]
    resume = OutputConfig(run_name="r", resume=True, tensorboard=True)
    resumed = CheckpointedRecorder(tmp_path, RunRecord(rounds=rows), 10, FINGERPRINT, resume)
    _record(resumed, [0.1, 0.2, 0.3, 0.4], first=2, **COUNTS)
    resumed.finish("completed")
    # Assert: one value per round, round 2's from the resumed run
    accuracy = _scalars(tmp_path)["server/accuracy"]
    assert [step for step, _ in accuracy] == [0, 1, 2, 3]
    assert [value for _, value in accuracy] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_a_completed_run_draws_its_curves_and_a_failed_one_does_not(tmp_path):
    # Prepare
    done = RunRecorder(tmp_path / "done", RunRecord(), 10)
    failed = RunRecorder(tmp_path / "failed", RunRecord(), 10)
    for recorder in (done, failed):
        _record(recorder, [0.1, 0.5, 0.4], **COUNTS)
    # Execute
    done.finish("completed")
    failed.finish("failed", error="boom")
    # Assert
    png = (tmp_path / "done" / curves.FILENAME).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert not (tmp_path / "failed" / curves.FILENAME).exists()


def test_curves_of_a_committed_run_from_the_command_line(tmp_path):
    # Prepare
    metrics = ROOT / "docs" / "results" / "iid-10-rounds-lora-s1" / "metrics.json"
    # Execute
    code = curves.main([str(metrics), str(tmp_path / "c.png")])
    # Assert
    assert code == 0
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
