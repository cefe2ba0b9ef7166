"""A full disk in a real run: round 2's checkpoint does not fit.

The run's output folder is a tmpfs in a private mount namespace (as root, ``unshare
--mount``, as the launcher's network namespace), so the disk is really full, not mocked:
once round 1's checkpoint is on it, this test fills the tmpfs (through the run's
``/proc/<pid>/root``) to leave less free space than a checkpoint takes and more than the
round's other files (metrics, the best round's tensors, the log). The checkpoint is
written to a temporary file and renamed (:func:`server_app.checkpoint.save`): the write
fails, round 1's checkpoint stays whole, and the run fails saying why. The folder is
copied out of the namespace when the run ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from safetensors import SafetensorError, safe_open

from tests.e2e.helpers import ROOT, launch_cmd

pytestmark = pytest.mark.e2e
RUN = "full"
# One client on 200 images: the drill is the disk, not the learning (it stops at round 2)
SETUP = "server.num-rounds=2 server.min-train-nodes=1 data.train-size=200"
TMPFS = "8m"  # round 1's files take ~2.5 MB (LoRA of TINY: checkpoint 1.2 MB, best 0.6 MB)

# Wrapper: $1 the output folder (a tmpfs from here on), $2 where it is copied at the end.
WRAPPER = (
    f'out="$1"; kept="$2"; shift 2; mount -t tmpfs -o size={TMPFS} fedpeft-test "$out" || '
    'exit 97; "$@"; rc=$?; rm -f "$out/filler"; cp -a "$out/." "$kept"; exit $rc'
)


def _round_of(path: Path) -> int | None:
    try:
        with safe_open(str(path), framework="numpy") as f:
            return int(json.loads(f.metadata()["fedpeft"])["round"])
    except (OSError, SafetensorError, KeyError, ValueError):  # absent, or not yet whole
        return None


@pytest.fixture(scope="module")
def full_disk_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disk-full")
    out, kept = tmp / "outputs", tmp / "kept"
    out.mkdir()
    kept.mkdir()
    cmd = launch_cmd(tmp, SETUP, supernodes=1, run_name=RUN)
    log_file = tmp / "output.txt"
    with log_file.open("w") as log:
        proc = subprocess.Popen(["unshare", "--mount", "sh", "-c", WRAPPER, "sh", str(out),
                                 str(kept), *cmd], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    # The run's view of its output folder: the tmpfs inside its mount namespace
    inside = Path(f"/proc/{proc.pid}/root") / out.relative_to("/")
    ckpt = inside / RUN / "checkpoint.safetensors"
    deadline = time.monotonic() + 400
    while _round_of(ckpt) != 1:
        assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()[-4000:]
        time.sleep(0.1)
    # Execute: fill the disk to three quarters of a checkpoint free (round 2's needs all)
    round_1 = ckpt.read_bytes()
    size = len(round_1)
    free = os.statvfs(inside).f_bavail * os.statvfs(inside).f_frsize
    with (inside / "filler").open("wb") as f:
        f.write(b"\0" * (free - 3 * size // 4))
    code = proc.wait(timeout=400)
    return code, log_file.read_text(), kept / RUN, round_1


def test_the_run_fails_saying_the_disk_is_full(full_disk_run):
    # Prepare
    code, output, run_dir, _ = full_disk_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Assert: a failed run, the reason in what the user sees and in metrics.json
    assert code != 0
    assert "No space left on device" in output and "after round 2" in output, output[-4000:]
    assert "previous checkpoint is unchanged" in output
    assert metrics["status"] == "failed" and "No space left on device" in metrics["error"]
    assert [r["round"] for r in metrics["rounds"]] == [0, 1, 2]  # recorded before the write


def test_round_1s_checkpoint_is_unchanged_and_no_partial_file_is_left(full_disk_run):
    # Prepare
    _, _, run_dir, round_1 = full_disk_run
    ckpt = run_dir / "checkpoint.safetensors"
    # Assert: byte for byte the file round 1 wrote, and it reads back
    assert ckpt.read_bytes() == round_1
    assert _round_of(ckpt) == 1
    assert not (run_dir / "checkpoint.safetensors.tmp").exists()
