"""``benchmarks/gpu_check.sh --cpu``: the GPU check end to end on the CPU, so it cannot rot.

The run blocks every installed package that the target CUDA machine lacks and no carried
wheel brings (Ray among them), so this fails as soon as the in-process path starts to
need one of them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("environment", "speed", "federation", "dp_round", "determinism", "imports")


def test_the_gpu_check_runs_on_the_cpu_and_writes_one_summary(tmp_path):
    # Prepare: the summary goes under $OUT, as on the CUDA machine
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable}
    # Execute
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    # Assert: every section ran without error; stdout holds the summary alone
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert json.loads(done.stdout) == summary
    assert summary["status"] == "done" and summary["errors"] == {}
    assert set(SECTIONS) <= set(summary)
    assert {"gpu_path_tests", "host_syncs"} <= set(summary["skipped"])
    env_ = summary["environment"]
    assert env_["mode"] == "cpu" and env_["auto"]["train.precision"] in ("fp32", "bf16")
    assert {"name", "compute_capability"} <= set(env_["gpu"])
    assert {"matmul.fp32_precision", "matmul.allow_tf32", "float32_matmul_precision"} <= set(
        env_["tf32"]
    )
    # speed: methods × precisions × 2 batch sizes; bf16 measured or skipped with a reason
    rows = summary["speed"]
    assert {(r["method"], r["precision"]) for r in rows} == {
        (m, p) for m in ("lora", "head", "full") for p in ("bf16", "fp32")
    }
    assert len(rows) == 12 and len({r["batch"] for r in rows}) == 2
    for row in rows:
        if row["precision"] == "fp32" or not row["skipped"]:
            assert row["train_img_s"] > 0 and row["eval_img_s"] > 0
            assert row["peak_reserved_mib"] is None  # no GPU
        else:
            assert "emulated" in row["skipped"]
    # the federation: rounds 0..2 with every client accepted; DP: one round with its ε
    fed, dp = summary["federation"], summary["dp_round"]
    assert fed["status"] == dp["status"] == "completed"
    assert [r["round"] for r in fed["rounds"]] == [0, 1, 2] and fed["seconds_per_round"] > 0
    assert all(0 <= r["accuracy"] <= 1 for r in fed["rounds"])
    assert all(r["accepted"] == fed["clients"] for r in fed["rounds"][1:])
    assert [r["round"] for r in dp["rounds"]] == [0, 1]
    assert 0 < dp["rounds"][1]["epsilon"] < math.inf
    # the same client round twice: identical on the CPU, and it did train
    det = summary["determinism"]["fp32"]
    assert det["max_abs_diff"] == 0.0 and det["bitwise_equal"] and det["max_abs_update"] > 0
    # imports: not Ray; nothing the target lacks that no wheel brings
    imports = summary["imports"]
    assert imports["never_imported"] == {"ray": True}
    assert imports["neither"] == []
    assert {"flwr", "opacus", "datasets", "flwr-datasets"} <= set(imports["from_wheels"])
    assert {"torch", "timm", "peft"} <= set(imports["on_target"])
