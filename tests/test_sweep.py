"""Sweep runner and report on tiny fake run outputs (no simulation involved)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedpeft.record import read_run
from fedpeft.tools import report
from fedpeft.tools import sweep as sweep_module
from fedpeft.tools.sweep import Run, load_sweep, run_sweep

SWEEP = """
[sweep]
base = "conf/base.toml"
methods = ["head", "lora"]
seeds = [1, 2]
num-supernodes = 4
results = "{root}/results"
report = "{root}/docs"
target-accuracy = 0.8

[settings.iid]
run-config = "data.partitioner='iid'"

[settings.dp]
run-config = "data.partitioner='iid'"
"""


def _fake_config(run: Run, lr: float = 0.01) -> dict:
    return {"seed": run.seed, "peft": {"method": run.method, "params": {"lr": lr}}}


def _fake_metrics(run: Run, status: str = "completed") -> dict:
    bump = 0.1 if run.method == "lora" else 0.0
    rounds = [
        {"round": r, "accuracy": 0.1 + 0.2 * r + bump + 0.01 * run.seed, "cum_bytes": 1000 * r,
         "bytes_up": 1000, "accepted": 2,
         "client_metrics": [{"dp-epsilon": 1.5 * r}] if run.setting == "dp" else []}
        for r in range(4)
    ]  # fmt: skip
    error = {"error": "RoundsFailedError('3 failed rounds | 0 valid replies')"}
    return {"status": status, "config": _fake_config(run),
            "trainable_params": 10 if run.method == "head" else 99,
            "bytes_per_transfer": 999, "rounds": rounds,
            **(error if status == "failed" else {})}  # fmt: skip


class FakeRunner:
    """Writes a run folder like the ServerApp would; optionally dies after ``stop_after``."""

    def __init__(self, stop_after: int | None = None, fail: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.stop_after = stop_after
        self.fail = fail or set()

    def __call__(self, run: Run, num_supernodes: int, out_dir: Path) -> Path:
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt  # the machine went away mid-sweep
        self.calls.append(run.name)
        run_dir = out_dir / run.name
        run_dir.mkdir(parents=True)
        status = "failed" if run.name in self.fail else "completed"
        (run_dir / "metrics.json").write_text(json.dumps(_fake_metrics(run, status)))
        (run_dir / "metrics.csv").write_text("round,accuracy\n")
        (run_dir / "final_trainable.safetensors").write_bytes(b"tensors")
        return run_dir


@pytest.fixture
def sweep(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(root=tmp_path))
    return load_sweep(path)


def test_interrupted_sweep_resumes_where_it_stopped(sweep):
    # Prepare: 2 settings × 2 methods × 2 seeds = 8 runs; the first attempt dies after 3
    assert len(sweep.runs) == 8
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, FakeRunner(stop_after=3), _fake_config)
    # Execute
    second = FakeRunner()
    run_sweep(sweep, second, _fake_config)
    # Assert: only the 5 missing runs ran again; metrics copied, tensors never
    assert second.calls == [r.name for r in sweep.runs[3:]]
    for run in sweep.runs:
        copied = sorted(p.name for p in (sweep.results / run.name).iterdir())
        assert copied == ["metrics.csv", "metrics.json"]


def test_failed_runs_are_recorded_as_failed_and_retried(sweep):
    first = run_sweep(sweep, FakeRunner(fail={"iid-lora-s1"}), _fake_config)
    assert dict((r.name, s) for r, s in first)["iid-lora-s1"] == "failed"
    assert read_run(sweep.results / "iid-lora-s1" / "metrics.json").status == "failed"
    retry = FakeRunner()
    run_sweep(sweep, retry, _fake_config)
    assert retry.calls == ["iid-lora-s1"]
    assert read_run(sweep.results / "iid-lora-s1" / "metrics.json").status == "completed"


def test_tensorboard_events_are_copied_beside_the_metrics(sweep):
    # Prepare: runs made with output.tensorboard = true
    class WithEvents(FakeRunner):
        def __call__(self, run: Run, num_supernodes: int, out_dir: Path) -> Path:
            run_dir = super().__call__(run, num_supernodes, out_dir)
            (run_dir / "tb").mkdir()
            (run_dir / "tb" / "events.out.tfevents.1").write_bytes(b"events")
            return run_dir

    # Execute
    run_sweep(sweep, WithEvents(), _fake_config)
    # Assert: tensorboard --logdir <results> finds every run's events
    for run in sweep.runs:
        assert (sweep.results / run.name / "tb" / "events.out.tfevents.1").read_bytes() == b"events"


def test_every_run_keeps_its_log_and_the_sweep_logs_done_of_total_with_an_eta(sweep, caplog):
    # Prepare: runs that leave run.log (fedpeft-sim does), one of them failing
    class WithLog(FakeRunner):
        def __call__(self, run: Run, num_supernodes: int, out_dir: Path) -> Path:
            run_dir = super().__call__(run, num_supernodes, out_dir)
            (run_dir / "run.log").write_text(f"log of {run.name}\n")
            return run_dir

    caplog.set_level("INFO", logger="fedpeft.tools.sweep")
    # Execute
    run_sweep(sweep, WithLog(fail={"iid-lora-s1"}), _fake_config)
    # Assert: the failed run's log is kept too (why it failed); progress after each run
    for run in sweep.runs:
        assert (sweep.results / run.name / "run.log").read_text() == f"log of {run.name}\n"
    done = [m for m in caplog.messages if " elapsed, ETA " in m]
    assert [m.split("]")[0] for m in done] == [f"[{i}/8" for i in range(1, 9)]
    assert done[-1].endswith("ETA 0s")


def test_runs_made_with_another_config_are_run_again(sweep, caplog):
    # Prepare: a finished sweep; then the LoRA learning rate changes in the preset
    run_sweep(sweep, FakeRunner(), _fake_config)
    lora_lr_changed = lambda run: _fake_config(run, 0.005 if run.method == "lora" else 0.01)  # noqa: E731
    # Execute
    again = FakeRunner()
    run_sweep(sweep, again, lora_lr_changed)
    # Assert: exactly the LoRA runs ran again, and the log names the key that changed
    assert again.calls == [r.name for r in sweep.runs if r.method == "lora"]
    assert "peft.params.lr: 0.01 -> 0.005" in caplog.text


def test_keys_a_finished_run_did_not_record_do_not_make_it_stale(sweep):
    # Prepare: a finished sweep; the app later gains a config key
    run_sweep(sweep, FakeRunner(), _fake_config)
    with_new_key = lambda run: {**_fake_config(run), "new-key": 1}  # noqa: E731
    # Execute
    again = FakeRunner()
    run_sweep(sweep, again, with_new_key)
    # Assert
    assert again.calls == []


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ('[settings.dirichlet-0.1]\nrun-config = "x=1"', r"unknown keys \['1'\].*needs quotes"),
        ('[settings.iid]\nrun-confg = "x=1"', r"\[settings.iid\] has unknown keys \['run-confg'\]"),
        ('[sweep]\nseed = [1]\n[settings.iid]\nrun-config = ""', r"\[sweep\] has .*'seed'"),
    ],
)
def test_a_malformed_sweep_file_fails_naming_the_key(tmp_path, table, match):
    # Prepare: an unquoted dot in a setting name makes a nested table, silently dropping
    # the setting's run-config (this ran IID runs under a Dirichlet name once)
    path = tmp_path / "sweep.toml"
    path.write_text(table)
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        load_sweep(path)


def test_report_table_csv_and_plots(sweep):
    # Prepare
    run_sweep(sweep, FakeRunner(), _fake_config)
    results_md = sweep.report / "RESULTS.md"
    sweep.report.mkdir(parents=True, exist_ok=True)
    results_md.write_text(f"# Results\n\nhand-written intro\n\n{report.BEGIN}\nold\n{report.END}\n"
                          "\n## Discussion\nkept\n")  # fmt: skip
    # Execute
    written = report.write_report(sweep, command="fedpeft-sweep sweep.toml")
    # Assert: the table replaced the generated part only
    text = results_md.read_text()
    assert "hand-written intro" in text and "## Discussion\nkept" in text and "old" not in text
    # lora, seeds 1 and 2: final accuracy 0.1 + 0.6 + 0.1 + 0.01·seed → mean 0.815 ± 0.007
    assert "| iid | lora | 2 | 0.815 ± 0.007 | 0.820 | 99 | 500 | 3,000 | — |" in text
    assert "| dp | head | 2 | 0.715 ± 0.007 | 0.720 | 10 | 500 | 3,000 | 4.50 |" in text
    with (sweep.results / "summary.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 8
    names = {p.name for p in written}
    assert {"accuracy_vs_bytes.png", "accuracy_vs_round.png", "epsilon_vs_accuracy.png"} <= names


def test_the_report_says_which_runs_failed_and_why(sweep):
    # Prepare: both seeds of iid × lora fail, one of dp × head's two
    run_sweep(sweep, FakeRunner(fail={"iid-lora-s1", "iid-lora-s2", "dp-head-s2"}),
              _fake_config)  # fmt: skip
    # Execute
    report.write_report(sweep, command="fedpeft-sweep sweep.toml")
    # Assert: a row of its own for the cell with no completed run (its error, "|"
    # escaped, the other columns empty); the count beside the completed seeds
    text = (sweep.report / "RESULTS.md").read_text()
    assert "5 of 8 runs finished, 3 failed (the sweep retries them)." in text
    assert ("| iid | lora | 0 (2 failed) | failed: RoundsFailedError('3 failed rounds \\| 0 "
            "valid replies') | — | — | — | — | — |") in text  # fmt: skip
    assert "| dp | head | 1 (+1 failed) | 0.710 |" in text  # one run: no sd


def test_accuracy_vs_bytes_has_a_series_per_method_and_the_target(sweep):
    run_sweep(sweep, FakeRunner(), _fake_config)
    fig = report.plot_curves(report.collect(sweep), "bytes", 0.8)
    for ax in fig.axes:  # one panel per setting
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["head", "lora", "target 0.8"]
        head = ax.get_lines()[0]
        assert list(head.get_xdata()) == [1000, 2000, 3000]  # rounds 1-3 (round 0 sent nothing)
        assert list(head.get_ydata()) == pytest.approx([0.315, 0.515, 0.715])
    assert [ax.get_title() for ax in fig.axes] == ["dp", "iid"]


def test_a_named_sweep_reports_beside_another_without_touching_it(sweep, tmp_path):
    # Prepare: the main sweep's report, then a second, named sweep into the same folders
    run_sweep(sweep, FakeRunner(), _fake_config)
    report.write_report(sweep, command="fedpeft-sweep sweep.toml")
    path = tmp_path / "long.toml"
    path.write_text(SWEEP.format(root=tmp_path).replace("[sweep]", '[sweep]\nname = "long"')
                    .replace("[settings.iid]", "[settings.iid-long]"))  # fmt: skip
    long = load_sweep(path)
    run_sweep(long, FakeRunner(), _fake_config)
    # Execute: the named sweep's report, then the main one's again
    written = report.write_report(long, command="fedpeft-sweep long.toml")
    report.write_report(sweep, command="fedpeft-sweep sweep.toml")
    # Assert: each table sits between its own markers, once; files do not collide
    text = (sweep.report / "RESULTS.md").read_text()
    begin, end = report.markers("long")
    assert text.count(begin) == text.count(report.BEGIN) == 1
    main_part = text.split(report.BEGIN)[1].split(report.END)[0]
    long_part = text.split(begin)[1].split(end)[0]
    assert "| iid | lora |" in main_part and "iid-long" not in main_part
    assert "| iid-long | lora |" in long_part and "| iid | lora |" not in long_part
    assert sweep.results / "summary-long.csv" in written
    assert (sweep.report / "plots" / "long" / "accuracy_vs_bytes.png").exists()
    with (sweep.results / "summary.csv").open() as f:
        assert {row["setting"] for row in csv.DictReader(f)} == {"iid", "dp"}


def test_a_sweep_name_that_is_no_file_name_part_is_refused(tmp_path):
    # Prepare
    path = tmp_path / "sweep.toml"
    path.write_text('[sweep]\nname = "../x"\n[settings.iid]\nrun-config = ""')
    # Execute / Assert
    with pytest.raises(ValueError, match=r"name '\.\./x'"):
        load_sweep(path)


class Recorded:
    """Stands in for ``subprocess.run``: keeps the command and its keywords, runs nothing."""

    def __init__(self) -> None:
        self.cmds: list[list[str]] = []
        self.kwargs: list[dict] = []

    def __call__(self, cmd, **kwargs):
        self.cmds.append(list(cmd))
        self.kwargs.append(kwargs)


@pytest.mark.parametrize(
    ("flag", "gpus", "cpus"),
    [
        (["--gpus-per-client", "0.25"], ["0.25"], ["1"]),
        ([], [], ["1"]),
        (["--cpus-per-client", "2"], [], ["2"]),
    ],
)
def test_the_sweep_passes_its_resource_shares_to_every_run(sweep, monkeypatch, tmp_path, flag,
                                                           gpus, cpus):  # fmt: skip
    # Prepare: the runs and the report are replaced; the runner fedpeft-sweep builds is kept
    runners = []
    monkeypatch.setattr(sweep_module, "run_sweep",
                        lambda s, runner, **k: runners.append(runner) or [])  # fmt: skip
    monkeypatch.setattr(sweep_module, "write_report", lambda *a, **k: [])
    recorded = Recorded()
    monkeypatch.setattr(sweep_module.subprocess, "run", recorded)
    sweep_file = tmp_path / "sweep.toml"
    # Execute: fedpeft-sweep's runner makes one run
    assert sweep_module.main([str(sweep_file), *flag]) == 0
    runners[0](sweep.runs[0], 4, tmp_path)
    # Assert: fedpeft-sim gets the GPU share (none without the flag), the CPU share (its
    # default 1 without the flag) and the SuperNodes
    cmd = recorded.cmds[0]
    assert cmd[1:3] == ["-m", "fedpeft.tools.launch"]
    assert cmd[cmd.index("--num-supernodes") + 1] == "4"
    assert [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--gpus-per-client"] == gpus
    assert [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--cpus-per-client"] == cpus


@pytest.mark.parametrize(
    ("flag", "bad"),
    [("--gpus-per-client", "-1"), ("--cpus-per-client", "0"), ("--cpus-per-client", "0.5")],
)
def test_the_sweep_refuses_a_bad_resource_share(tmp_path, capsys, flag, bad):
    # Execute
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main([str(tmp_path / "sweep.toml"), flag, bad])
    # Assert
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err
