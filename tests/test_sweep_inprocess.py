"""fedpeft-sweep --in-process --jobs N: each run a ``python -m fedpeft.tools.inprocess`` process on
its own CPUs, N at once; and one real such run (with server.evaluate-every)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

from fedpeft.record import read_run, write_run
from fedpeft.tools import sweep as sweep_module
from fedpeft.tools.rescore import main as rescore_main
from fedpeft.tools.rescore import rescore
from fedpeft.tools.sweep import InProcess, Run, load_sweep, run_sweep
from tests.test_sweep import SWEEP, FakeRunner, Recorded

# A few seconds' run: timm's test_vit (random weights, 32 px) on 60 sklearn digits, 2 nodes
QUICK = ("model.name='test_vit' model.weights='random' model.img-size=32 "
         "data.source='builtin' data.dataset='digits' data.train-size=60 data.test-size=50 "
         "server.fraction-train=1.0 server.min-train-nodes=2 peft.method='lora' "
         "train.num-threads=1 server.num-rounds=3 server.evaluate-every=2")  # fmt: skip


def test_jobs_split_the_cpus_and_each_run_is_pinned_to_its_share(monkeypatch, tmp_path):
    # Prepare: 3 CPUs, 2 jobs
    monkeypatch.setattr(sweep_module, "host_cpus", lambda: [4, 5, 6])
    recorded = Recorded()
    monkeypatch.setattr(sweep_module.subprocess, "run", recorded)
    runner = InProcess(jobs=2)
    runs = [Run(f"r{i}", "iid", "lora", 1, ("conf/x.toml", "seed=1")) for i in range(3)]
    # Execute: three runs, one after the other (each takes the first free slot)
    for run in runs:
        runner(run, 4, tmp_path)
    # Assert: slots {4, 6} and {5}, in turn; the run's threads = its CPUs; the command
    cmd = recorded.cmds[0]
    assert cmd[1:5] == ["-m", "fedpeft.tools.inprocess", "--num-supernodes", "4"]
    assert cmd[5:] == ["-c", "conf/x.toml", "-c", "seed=1",
                       "-c", f"output.dir='{tmp_path}' output.run-name='r0'"]  # fmt: skip
    pins = [kwargs["preexec_fn"].args for kwargs in recorded.kwargs]
    assert pins == [(0, [4, 6]), (0, [5]), (0, [4, 6])]
    threads = [kwargs["env"]["OMP_NUM_THREADS"] for kwargs in recorded.kwargs]
    assert threads == ["2", "1", "2"]


@pytest.mark.parametrize("jobs", [0, 3])
def test_more_jobs_than_cpus_or_none_is_refused(monkeypatch, jobs):
    # Prepare
    monkeypatch.setattr(sweep_module, "host_cpus", lambda: [0, 1])
    # Execute / Assert
    with pytest.raises(ValueError, match=rf"--jobs {jobs}: must be between 1 and the 2 CPUs"):
        InProcess(jobs)


def test_jobs_need_in_process(tmp_path, capsys):
    # Execute
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main([str(tmp_path / "sweep.toml"), "--jobs", "2"])
    # Assert
    assert exit_info.value.code == 2
    assert "--jobs 2 needs --in-process" in capsys.readouterr().err


class _Together(FakeRunner):
    """A runner whose runs each wait until another is running too (or time out)."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=20)
        self.lock = threading.Lock()

    def __call__(self, run: Run, num_supernodes: int, out_dir: Path) -> Path:
        self.barrier.wait()  # BrokenBarrierError unless 2 runs are in flight at once
        with self.lock:
            return super().__call__(run, num_supernodes, out_dir)


def test_jobs_2_runs_two_at_once_and_collects_every_run(tmp_path):
    # Prepare: 2 seeds × 2 settings × 2 methods
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(root=tmp_path))
    sweep = load_sweep(path)
    runner = _Together()
    # Execute
    made = run_sweep(sweep, runner, resolve=lambda r: {}, jobs=2)
    # Assert: every run made and copied (the barrier would have broken if run in turn)
    assert sorted(r.name for r, status in made if status == "completed") == sorted(
        r.name for r in sweep.runs
    )
    assert all((sweep.results / r.name / "metrics.json").exists() for r in sweep.runs)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """One real in-process run of QUICK through the sweep's runner (one slot)."""
    tmp = tmp_path_factory.mktemp("real")
    run = Run("quick", "iid", "lora", 3, (QUICK, "seed=3"))
    run_dir = InProcess(jobs=1)(run, 2, tmp)
    assert (run_dir / "metrics.json").exists(), (tmp / "quick.log").read_text()[-3000:]
    return run_dir


def test_a_real_in_process_run_evaluates_every_2nd_round_and_the_last(real_run):
    # Prepare / Execute: the sweep's runner, one slot, on the app in this checkout
    run_dir = real_run
    # Assert: completed; rounds 0, 2 and 3 evaluated, round 1 not (NaN, not diverged, not
    # at chance, no balanced accuracy or AUC); the best round is an evaluated one; the
    # whole output beside the metrics
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed", (run_dir / "run.log").read_text()[-3000:]
    evaluated = [r["round"] for r in metrics["rounds"] if math.isfinite(r["accuracy"])]
    assert evaluated == [0, 2, 3]
    skipped = metrics["rounds"][1]
    assert math.isnan(skipped["loss"]) and not skipped["diverged"] and not skipped["at_chance"]
    assert skipped["balanced_accuracy"] is None and skipped["auc"] is None
    for r in (metrics["rounds"][i] for i in evaluated):
        assert 0.0 <= r["balanced_accuracy"] <= 1.0 and 0.0 <= r["auc"] <= 1.0
    assert metrics["best_round"] in evaluated
    assert metrics["final_accuracy"] == metrics["rounds"][3]["accuracy"]
    log = (run_dir / "run.log").read_text()
    assert "round 1/3: accuracy -, loss - |" in log
    assert os.path.getsize(run_dir / "final_trainable.safetensors") > 0


def test_seeds_runs_only_those_seeds_and_the_report_covers_the_whole_file(tmp_path, monkeypatch):
    # Prepare: the sweep file of tests/test_sweep.py (seeds 1 and 2), a recording runner
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(root=tmp_path))
    given = []
    monkeypatch.setattr(sweep_module, "run_sweep",
                        lambda s, runner, **k: given.append(s) or [])  # fmt: skip
    reported = []
    monkeypatch.setattr(sweep_module, "write_report", lambda s, **k: reported.append(s))
    # Execute
    assert sweep_module.main([str(path), "--seeds", "2"]) == 0
    # Assert
    assert {r.seed for r in given[0].runs} == {2} and len(given[0].runs) == 4
    assert len(reported[0].runs) == 8


def test_a_seed_the_file_does_not_have_is_refused(tmp_path, capsys):
    # Prepare
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(root=tmp_path))
    # Execute
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main([str(path), "--seeds", "3"])
    # Assert
    assert exit_info.value.code == 2
    assert "--seeds 3: " in capsys.readouterr().err


def test_a_run_another_sweep_finished_meanwhile_is_not_run_again(tmp_path):
    # Prepare: two sweep files sharing a results folder; the first lists its runs, then
    # (as if another process ran it meanwhile) its first run is finished by the second
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(root=tmp_path))
    sweep = load_sweep(path)
    first = sweep.runs[0]
    other = FakeRunner()
    listed = []

    def resolve(run):
        if run is first:
            listed.append(run)  # 1st call: the listing (not done); 2nd: just before it starts
            if len(listed) == 2:  # meanwhile the other sweep has finished it
                sweep_module._collect(run, other(run, 4, tmp_path / "other"), sweep.results)
        return {"seed": run.seed, "peft": {"method": run.method, "params": {"lr": 0.01}}}

    runner = FakeRunner()
    # Execute
    made = dict((r.name, status) for r, status in run_sweep(sweep, runner, resolve=resolve))
    # Assert: not run by this sweep, reported as done elsewhere; the others run
    assert made[first.name] == sweep_module.DONE_ELSEWHERE
    assert first.name not in runner.calls and len(runner.calls) == len(sweep.runs) - 1


def test_a_rescore_reproduces_the_servers_last_round_and_refuses_the_rest(real_run, tmp_path):
    # Prepare: the run's metrics as a run recorded before the scores existed, in a results
    # folder that kept only the metrics; a copy of the whole run folder whose last
    # accuracy was changed (so its tensors are not the model it records)
    recorded = read_run(real_run / "metrics.json").rounds[-1]
    old = read_run(real_run / "metrics.json")
    old.rounds[-1].balanced_accuracy = old.rounds[-1].auc = None
    (tmp_path / "old").mkdir()
    write_run(old, tmp_path / "old")
    tampered = shutil.copytree(real_run, tmp_path / "tampered")
    record = read_run(tampered / "metrics.json")
    record.rounds[-1].accuracy /= 2
    write_run(record, tampered)
    before = (tampered / "metrics.json").read_text()
    # Execute
    balanced, auc = rescore(real_run, into=tmp_path / "old")
    again = rescore(real_run, into=tmp_path / "old")  # a rescore can be repeated
    # Assert: the server's figures, in the last round only; another run's record, and a
    # record its tensors do not reproduce, are refused (with both values) and left as
    # they were
    assert (balanced, auc) == pytest.approx((recorded.balanced_accuracy, recorded.auc))
    assert again == (balanced, auc)
    rows = read_run(tmp_path / "old" / "metrics.json").rounds
    assert (rows[-1].balanced_accuracy, rows[-1].auc) == (balanced, auc)
    assert rows[2].balanced_accuracy is not None  # the server's, from the run
    with pytest.raises(ValueError, match="records another run"):
        rescore(real_run, into=tampered)
    with pytest.raises(ValueError, match=f"but round 3 recorded {record.rounds[-1].accuracy}"):
        rescore(tampered)
    assert (tampered / "metrics.json").read_text() == before


def test_a_rescore_evaluates_where_the_run_recorded_its_server_evaluating(real_run, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    # Prepare: the run as if its server had evaluated on a GPU in bf16; no GPU here
    from fedpeft import device as device_lib
    from fedpeft.config import ConfigError
    from fedpeft.precision import native_bf16

    auto = "bf16" if native_bf16(torch.device("cpu")) else "fp32"  # server.precision='auto'
    assert read_run(real_run / "metrics.json").server_engine == {"device": "cpu", "precision": auto}
    copy = shutil.copytree(real_run, tmp_path / "gpu-run")
    record = read_run(copy / "metrics.json")
    record.server_engine = {"device": "cuda", "precision": "bf16"}
    write_run(record, copy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device_lib.resolve_device.cache_clear()
    # Execute / Assert: refused, naming the device, instead of `auto` picking the CPU and
    # the accuracy check failing for another reason
    with pytest.raises(ConfigError, match=r"server\.device='cuda'"):
        rescore(copy)
    device_lib.resolve_device.cache_clear()


def test_the_rescore_command_counts_the_runs_it_refuses_and_scores_the_rest(
    real_run, tmp_path, caplog
):
    # Prepare: a copy of the run as recorded before the scores existed, and a folder that
    # is not a run
    copy = shutil.copytree(real_run, tmp_path / "copy")
    old = read_run(copy / "metrics.json")
    old.rounds[-1].balanced_accuracy = old.rounds[-1].auc = None
    write_run(old, copy)
    (tmp_path / "empty").mkdir()
    # caplog's handler on the project logger: setup_logging keeps a logger's own handlers
    # (and its propagation), and the autouse fixture clears them after the test
    logging.getLogger("fedpeft").addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="fedpeft")
    # Execute
    refused = rescore_main([str(tmp_path / "empty"), str(copy)])
    # Assert: one refused, logged by name; the run after it scored as the server did
    assert refused == 1
    assert str(tmp_path / "empty") in caplog.text
    scored = read_run(copy / "metrics.json").rounds[-1]
    assert scored.auc == pytest.approx(read_run(real_run / "metrics.json").rounds[-1].auc)
    assert f"{copy}: balanced accuracy" in caplog.text
