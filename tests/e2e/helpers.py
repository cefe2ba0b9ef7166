"""Run the app through the real launcher (loopback netns as root) and read results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Tiny but real: the offline ViT-S/14 at 28 px (2×2 patches) on sklearn digits.
TINY = (
    "model.img-size=28 data.source='builtin' data.dataset='digits' data.train-size=0 "
    "data.test-size=0 server.num-rounds=2 server.fraction-train=1.0 server.min-train-nodes=3 "
    "peft.method='lora' peft.lora.lr=0.01"
)


def run_app(
    tmp_path: Path,
    overrides: str,
    supernodes: int = 3,
    timeout: int = 600,
    env: dict[str, str] | None = None,
    netns: str = "auto",
) -> tuple[int, str, dict]:
    """Run one simulation; return (exit code, output, metrics.json)."""
    out_dir = tmp_path / "outputs"
    cmd = [
        sys.executable, "-m", "fedpeft.launch", "--app", str(ROOT),
        "--num-supernodes", str(supernodes), "--cpus-per-client", "1", "--netns", netns,
        "--timeout", str(timeout), "-c", TINY, "-c", overrides,
        "-c", f"output.dir='{out_dir}' output.run-name='e2e'",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60,
                          env={**os.environ, **(env or {})})  # fmt: skip
    metrics_path = out_dir / "e2e" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return proc.returncode, proc.stdout + proc.stderr, metrics
