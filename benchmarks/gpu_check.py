r"""One check of the app's GPU path, summed up in one JSON (run by ``benchmarks/gpu_check.sh``).

    python3 -m benchmarks.gpu_check --out outputs/gpu-check/gpu_check.json   # a CUDA GPU
    .venv/bin/python -m benchmarks.gpu_check --cpu --out /tmp/gpu_check.json  # tiny, CPU

Sections, each recorded in the JSON as it ends (a section that raises records its error
and the next one runs):

* ``environment``: versions, the GPU's name, compute capability and memory, what
  ``train.device='auto'`` and ``train.precision='auto'`` resolve to, the TF32 flags after
  that, and flwr's and Opacus's installed requirements outside their pins;
* ``speed``: local-training and evaluation img/s per PEFT method (LoRA, head, full),
  precision (bf16, fp32) and batch size, with the peak reserved and allocated GPU memory
  of each row (``benchmarks.engine.measure``; random weights, synthetic 28 px images
  resized on the device);
* ``federation``: a 2-round run of the ServerApp and its ClientApps in this process
  (``fedpeft.tools.inprocess``, no Ray) on scikit-learn's digits with LoRA: accuracy and
  seconds per round;
* ``dp_round``: one round of the same federation with local DP-SGD (``dp.mode='local'``);
* ``determinism``: one client's round trained twice from the same weights with the same
  seed; the largest absolute difference between the two results, per precision;
* ``host_syncs``: how often one client's round made the host wait for the GPU (CUDA's
  sync debug mode; GPU mode only): once, for the round's loss, when nothing else syncs;
* ``gpu_path_tests``: ``tests/test_gpu_paths.py`` on this machine (GPU mode only);
* ``imports``: the distributions the run imported, by where the target machine gets them
  (its own Python, the carried wheels, neither), and that it did not import Ray (blocked
  in every mode: its wheel is too large to carry; :mod:`benchmarks.target_imports`).

``--cpu``: every section on the CPU with timm's ``test_vit`` at 32 px, tiny batches and
3 clients (well under a minute on 2 cores); bf16 is measured only where the CPU computes it
natively. It also blocks every installed package the target machine lacks
(``benchmarks/gpu_target_packages.txt``) except the carried wheels
(``benchmarks/gpu_wheels.txt``), so it fails where the GPU run would.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.target_imports import (
    NEVER,
    absent_on_target,
    block,
    imported_packages,
    unmet_requirements,
)
from fedpeft.run_folder import METRICS_JSON

log = logging.getLogger("benchmarks.gpu_check")

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("lora", "head", "full")
VERSIONS = (
    "timm",
    "peft",
    "flwr",
    "opacus",
    "numpy",
    "protobuf",
    "grpcio",
    "typer",
    "scikit-learn",
)
GPU_PATH_TESTS = ROOT / "tests" / "test_gpu_paths.py"


@dataclass(frozen=True)
class Sizes:
    """What each mode measures."""

    model: str  # run-config overrides naming the model
    batches: tuple[int, ...]  # speed: one row per batch size
    train_steps: int  # speed: timed training steps per row
    eval_steps: int  # speed: timed evaluation batches per row
    clients: int  # federation, DP round, determinism: nodes (partitions)
    data: str  # run-config overrides for the data and the clients' batches
    threads: int  # train.num-threads (0: all)
    budget_s: float  # wall-clock seconds the script plans for
    gpu_path_tests_s: float = 0.0  # the pytest run's time limit (0: skipped)
    reserve_s: dict[str, float] = field(default_factory=dict)  # seconds a section needs


GPU = Sizes(
    model="model.name='vit_base_patch16_224' model.weights='random' model.img-size=224",
    batches=(64, 128),
    train_steps=12,
    eval_steps=24,
    clients=8,
    data="data.dataset='digits' data.train-size=0 data.test-size=0 train.batch-size=64",
    threads=0,
    budget_s=270.0,
    gpu_path_tests_s=90.0,
    reserve_s={
        "federation": 60,
        "dp_round": 40,
        "determinism": 20,
        "host_syncs": 15,
        "gpu_path_tests": 45,
    },
)
CPU = Sizes(
    model="model.name='test_vit' model.weights='random' model.img-size=32",
    batches=(4, 8),
    train_steps=2,
    eval_steps=2,
    clients=3,
    data="data.dataset='digits' data.train-size=120 data.test-size=60 train.batch-size=16",
    threads=1,
    budget_s=150.0,
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _read(flag: Callable[[], object]) -> object:
    """A TF32 flag's value, or why it cannot be read (torch refuses mixed legacy/new APIs)."""
    try:
        return flag()
    except (AttributeError, RuntimeError) as err:
        return f"unreadable: {type(err).__name__}: {str(err)[:90]}"


def environment(mode: str, blocked: list[str]) -> dict:
    """Versions, the GPU, what ``auto`` resolves to, the TF32 flags, imports."""
    import torch

    from fedpeft.device import resolve_device
    from fedpeft.precision import native_bf16, resolve_precision

    device = resolve_device("auto", "train.device")
    precision = resolve_precision("auto", device)
    gpu: dict = {"name": None, "compute_capability": None, "memory_gib": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device if device.type == "cuda" else 0)
        gpu = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
               "memory_gib": round(props.total_memory / 2**30, 1),
               "multiprocessors": props.multi_processor_count}  # fmt: skip
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    return {
        "mode": mode,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": gpu,
        "auto": {
            "train.device": str(device),
            "train.precision": precision.name,
            "native_bf16": native_bf16(device),
        },
        "tf32": {
            "matmul.fp32_precision": _read(lambda: matmul.fp32_precision),
            "cudnn.conv.fp32_precision": _read(lambda: conv.fp32_precision),
            "matmul.allow_tf32": _read(lambda: matmul.allow_tf32),
            "float32_matmul_precision": _read(torch.get_float32_matmul_precision),
        },
        "cpu_threads": torch.get_num_threads(),
        "packages": {d: _version(d) for d in VERSIONS},
        "unmet_requirements": unmet_requirements(["flwr", "opacus", "datasets", "flwr-datasets"]),
        "blocked_modules": len(blocked),
    }


def speed(
    sizes: Sizes, overrides: list[str], bf16_native: bool, gpu: bool, time_left: Callable[[], float]
) -> list[dict]:
    """Rows of :func:`benchmarks.engine.measure` per method, precision and batch size.

    Rows are skipped once ``time_left()`` falls under what the later sections reserve.
    """
    from benchmarks.engine import measure

    later = sum(sizes.reserve_s.values())
    rows = []
    for batch in sizes.batches:
        for method in METHODS:
            for precision in ("bf16", "fp32"):
                row: dict = {"method": method, "precision": precision, "batch": batch,
                             "train_images": batch * sizes.train_steps,
                             "eval_images": batch * sizes.eval_steps, "skipped": None}  # fmt: skip
                if precision == "bf16" and not (gpu or bf16_native):
                    row["skipped"] = "bf16 is emulated on this CPU (no AVX512-BF16 or AMX)"
                elif time_left() < later:
                    row["skipped"] = f"{time_left():.0f} s of the budget left"
                if row["skipped"]:
                    rows.append(row)
                    continue
                cfg = [*overrides, f"train.batch-size={batch}"]
                row.update(measure(cfg, method, precision, row["train_images"],
                                   row["eval_images"], eval_batch=batch))  # fmt: skip
                log.info("speed %s", row)
                rows.append(row)
    return rows


def federation(overrides: list[str], clients: int, runs: Path, name: str) -> dict:
    """One run of the ServerApp and its ClientApps in this process; its rounds."""
    import torch

    from fedpeft.config import app_config
    from fedpeft.record import read_run
    from fedpeft.tools.inprocess import run_in_process

    extra = (f"server.fraction-train=1.0 server.min-train-nodes={clients} output.dir='{runs}' "
             f"output.run-name='{name}' output.checkpoint=false")  # fmt: skip
    run_config = app_config(ROOT, [*overrides, extra])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run_in_process(run_config, clients)
    wall = time.perf_counter() - start
    run = read_run(runs / name / METRICS_JSON)
    trained = [r for r in run.rounds if r.round > 0]
    return {
        "status": run.status,
        "clients": clients,
        "wall_s": wall,
        "rounds": [
            {
                "round": r.round,
                "accuracy": r.accuracy,
                "wall_s": r.wall_seconds,
                "train_s": r.train_seconds,
                "accepted": r.accepted,
                "failed": r.failed,
                "epsilon": r.epsilon,
            }
            for r in run.rounds
        ],
        "seconds_per_round": sum(r.wall_seconds for r in trained) / max(len(trained), 1),
        "final_accuracy": run.final_accuracy,
        "peak_reserved_mib": (
            torch.cuda.max_memory_reserved() / 2**20 if torch.cuda.is_available() else None
        ),
        "error": run.error,
    }


def determinism(overrides: list[str], clients: int, precisions: list[str]) -> dict:
    """One client's round trained twice from the same weights and seed, per precision."""
    from benchmarks.plain_loop import app_config
    from fedpeft.arrays import trainable_state
    from fedpeft.data import load_partition
    from fedpeft.engine import make_engine
    from fedpeft.model import build_model
    from fedpeft.training import client_seed, train_local

    cfg = app_config(overrides)
    data = load_partition(cfg.data, cfg.seed, cfg.model.img_size, 0, clients)
    out: dict = {"images": len(data), "method": cfg.peft.method}
    for precision in precisions:
        model = build_model(cfg.model, cfg.peft, data.num_classes, cfg.seed)
        engine = make_engine(model, cfg.train.device, precision)
        received = {k: v.clone() for k, v in trainable_state(model).items()}
        trained = []
        for _ in range(2):
            model.load_state_dict(received, strict=False)
            train_local(model, data, cfg.train, cfg.lr, client_seed(cfg.seed, 1, 0), engine)
            trained.append({k: v.clone() for k, v in trainable_state(model).items()})
        diff = max(float((a - trained[1][k]).abs().max()) for k, a in trained[0].items())
        moved = max(float((a - received[k]).abs().max()) for k, a in trained[0].items())
        out[precision] = {"max_abs_diff": diff, "bitwise_equal": diff == 0.0,
                          "tensors": len(received), "max_abs_update": moved}  # fmt: skip
    return out


def host_syncs(overrides: list[str], clients: int) -> dict:
    """Host-device synchronisations during one client's round (CUDA's sync debug mode).

    The loop should wait for the GPU once, when it reads the round's loss at the end.
    """
    import warnings

    import torch

    from benchmarks.plain_loop import app_config
    from fedpeft.data import load_partition
    from fedpeft.engine import make_engine
    from fedpeft.model import build_model
    from fedpeft.training import train_local

    cfg = app_config(overrides)
    data = load_partition(cfg.data, cfg.seed, cfg.model.img_size, 0, clients)
    model = build_model(cfg.model, cfg.peft, data.num_classes, cfg.seed)
    engine = make_engine(model, cfg.train.device, cfg.train.precision)
    train_local(model, data, cfg.train, cfg.lr, 1, engine)  # warm-up: allocations, kernels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_local(model, data, cfg.train, cfg.lr, 2, engine)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    steps = -(-len(data) // cfg.train.batch_size) * cfg.train.epochs
    return {"precision": engine.precision.name, "steps": steps, "syncs": len(syncs),
            "first": syncs[:3]}  # fmt: skip


def gpu_path_tests(limit_s: float) -> dict:
    """``tests/test_gpu_paths.py`` in a child pytest: its exit status and summary line."""
    if not GPU_PATH_TESTS.is_file():
        return {"skipped": f"{GPU_PATH_TESTS.relative_to(ROOT)} is absent"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(GPU_PATH_TESTS.relative_to(ROOT))]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return {"rc": None, "summary": f"timed out after {limit_s:.0f} s"}
    lines = done.stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return {"rc": done.returncode, "summary": lines[-1] if lines else "", "failed": failed,
            "wall_s": time.perf_counter() - start}  # fmt: skip


class Report:
    """The JSON summary, rewritten after every section so a killed run keeps what it did."""

    def __init__(self, path: Path, budget_s: float) -> None:
        self.path, self.budget_s = path, budget_s
        self.start = time.perf_counter()
        self.data: dict = {"status": "running", "errors": {}, "skipped": {}}

    def left_s(self) -> float:
        """Seconds left of the budget."""
        return self.budget_s - (time.perf_counter() - self.start)

    def section(self, name: str, run: Callable[[], object], reserve_s: float = 0.0) -> None:
        """Run one section and record its result (or its error, or why it was skipped)."""
        if reserve_s and self.left_s() < reserve_s:
            self.data["skipped"][name] = f"{self.left_s():.0f} s of the budget left"
            log.warning("%s skipped: %s", name, self.data["skipped"][name])
        else:
            start = time.perf_counter()
            try:
                self.data[name] = run()
            except Exception:  # the next section still runs; the error is in the JSON
                log.exception("%s failed", name)
                self.data["errors"][name] = traceback.format_exc(limit=-8)
            log.info("%s: %.1f s", name, time.perf_counter() - start)
        self.write()

    def write(self) -> None:
        """Write the JSON (atomically)."""
        self.data["wall_s"] = time.perf_counter() - self.start
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


def run(args: argparse.Namespace, blocked: list[str]) -> dict:
    """Every section in turn; returns the summary."""
    from fedpeft.device import set_threads

    sizes = CPU if args.cpu else GPU
    report = Report(args.out, args.budget_s or sizes.budget_s)
    set_threads(sizes.threads)
    device = "train.device='cpu' server.device='cpu'" if args.cpu else ""
    base = [f"{sizes.model} {device} train.num-threads={sizes.threads}"]
    fed = [*base, f"{sizes.data} peft.method='lora' server.num-rounds=2"]
    reserve = sizes.reserve_s.get
    report.section("environment", lambda: environment("cpu" if args.cpu else "gpu", blocked))
    auto = report.data.get("environment", {}).get("auto", {})
    gpu = not args.cpu and str(auto.get("train.device", "")).startswith("cuda")
    native = _cpu_bf16() if args.cpu else bool(auto.get("native_bf16"))
    if not args.cpu and not gpu:  # ViT-B/16 on a CPU would outlast the budget many times
        report.data["errors"]["environment"] = (
            f"train.device='auto' is {auto.get('train.device')!r}: torch sees no CUDA device "
            "here; run with --cpu for the CPU check"
        )
        report.data["status"] = "failed"
        report.write()
        return report.data
    report.section("speed", lambda: speed(sizes, base, native, gpu, report.left_s))
    runs = args.runs_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        report.section("federation", lambda: federation(fed, sizes.clients, runs, "fed"),
                       reserve("federation", 0))  # fmt: skip
        dp = [*fed, "dp.mode='local' server.num-rounds=1"]
        report.section("dp_round", lambda: federation(dp, sizes.clients, runs, "dp"),
                       reserve("dp_round", 0))  # fmt: skip
    finally:
        if args.runs_dir is None:
            shutil.rmtree(runs, ignore_errors=True)
    precisions = ["bf16", "fp32"] if gpu or native else ["fp32"]
    report.section("determinism", lambda: determinism(fed, sizes.clients, precisions),
                   reserve("determinism", 0))  # fmt: skip
    if gpu:
        report.section("host_syncs", lambda: host_syncs(fed, sizes.clients),
                       reserve("host_syncs", 0))  # fmt: skip
    else:
        report.data["skipped"]["host_syncs"] = "CUDA only (its sync debug mode)"
    if gpu and sizes.gpu_path_tests_s:
        limit = min(sizes.gpu_path_tests_s, report.left_s())
        report.section(
            "gpu_path_tests", lambda: gpu_path_tests(limit), reserve("gpu_path_tests", 0)
        )
    else:
        report.data["skipped"]["gpu_path_tests"] = "GPU mode only (CI runs the suite itself)"
    report.data["imports"] = imported_packages()
    report.data["status"] = "done"
    report.write()
    return report.data


def _cpu_bf16() -> bool:
    import torch

    from fedpeft.precision import native_bf16

    return native_bf16(torch.device("cpu"))


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[int]:
    """Send everything written to stdout (by Python or C) to stderr; yields the real stdout."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    try:
        yield real
    finally:
        sys.stdout.flush()
        os.dup2(real, 1)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the check, print the summary (stdout's only output), write it."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument(
        "--cpu", action="store_true", help="the same check on the CPU, tiny (what CI runs)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON summary's path")
    parser.add_argument("--runs-dir", type=Path, help="keep the federation's run folders here")
    parser.add_argument(
        "--budget-s", type=float, default=0.0, help="seconds to plan for (default: by mode)"
    )
    args = parser.parse_args(argv)
    # Before anything imports them: the target machine has none of these.
    blocked = block(NEVER)
    if args.cpu:
        blocked = sorted({*blocked, *block(m for m in absent_on_target() if m not in NEVER)})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with stdout_to_stderr() as real:
        summary = run(args, blocked)
    text = json.dumps(summary, indent=2, default=str) + "\n"
    os.write(real, text.encode())
    os.close(real)
    return 0 if summary["status"] == "done" and not summary["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
