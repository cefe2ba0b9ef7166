"""Checkpoint and resume: a ServerApp SIGKILLed in round 2 during aggregation (its replies
in, its checkpoint not yet written: ``fault.server-crash-round``) and resumed equals an
uninterrupted run.

The run is stateful on the server in two ways: FedAdam's moments and central DP's
releases (its ε is cumulative; its noise is seeded by round). It is RoLoRA
(``peft.lora.federation='rolora'``: B trains and travels up in odd rounds, A in even
ones), so the resumed round 2 must take A's turn, and FedAdam must leave the factor
not sent up where it was; RoLoRA's learning run is ``test_compression.py``'s. The uninterrupted
reference is the same ServerApp and ClientApp in this process (:mod:`fedpeft.tools.inprocess`),
so the equality also says that the Ray actors compute what this process computes.
The central-DP record of the resumed run is checked against ``dp-accounting`` here too:
a run of its own cost ~60 busy CPU-seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dp_accounting import dp_event
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp import RdpAccountant
from safetensors import safe_open

from fedpeft.config import app_config
from fedpeft.tools.inprocess import run_in_process
from tests.e2e.helpers import (
    ROOT,
    TINY,
    checkpoint_round,
    read_metrics,
    reply_bytes,
    run_app,
    run_log,
)

pytestmark = pytest.mark.e2e
NODES, SAMPLED = 4, 2
# 4 clients, 2 sampled per round (seeded by partition id), 2 rounds; a stateful server
# optimizer (FedAdam's moments after round 1 must come back from the checkpoint's tensors
# for round 2 to match) after central DP (its releases must come back for round 2's ε).
# DP's mechanics only: σ = 0.1 (ε in the hundreds), since noise std σ·C/m with m = 3
# clients and σ = 2 destroyed this tiny model in one round (loss 2.8 → 29.8, then NaN;
# tried 2026-11-25).
SIGMA, DELTA = 0.1, 1e-3
# 100 training images per client (4 steps), not the whole digits split (1,437 images):
# the equality and the accounting do not need them, and the three runs train 3.6× less.
SETUP = (f"server.num-rounds=2 server.fraction-train=0.5 server.min-train-nodes={SAMPLED} "
         f"data.train-size={100 * NODES} "
         "server.optimizer='fedadam' server.lr=0.01 dp.mode='central' "
         f"dp.noise-multiplier={SIGMA} dp.clip-norm=0.5 dp.delta={DELTA} "
         "peft.lora.federation='rolora' "
         # the CPU on both sides: on a GPU machine `auto` would put the in-process reference
         # on the GPU and the Ray actors (given no GPU) on the CPU, which round differently
         "train.device='cpu' server.device='cpu'")  # fmt: skip
SAME = ("round", "accuracy", "loss", "clients", "accepted", "bytes_down", "bytes_up",
        "cum_bytes", "weights", "dp_epsilon", "dp_sample_rate", "dp_releases")  # fmt: skip


def _tensors(run_dir: Path) -> dict[str, bytes]:
    with safe_open(str(run_dir / "final_trainable.safetensors"), framework="numpy") as f:
        return {k: f.get_tensor(k).tobytes() for k in f.keys()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(reference, resumed) metrics and run folders: the run killed in round 2, resumed."""
    tmp = tmp_path_factory.mktemp("resume")
    # Prepare: the run whose ServerApp process dies in round 2, after aggregating ...
    killed = tmp / "outputs" / "killed"
    code, out, _ = run_app(tmp, SETUP + " fault.server-crash-round=2", supernodes=NODES,
                           run_name="killed")  # fmt: skip
    assert code != 0, "the killed run must not report success"
    assert "fault.server-crash-round=2: SIGKILL after aggregation" in run_log(tmp, "killed")
    bit = checkpoint_round(killed / "checkpoint.safetensors") == 1
    assert bit, "round 2 reached the checkpoint: test did not bite"
    crashed = read_metrics(tmp, "killed")
    assert crashed["status"] == "running"  # died without finishing
    assert [r["round"] for r in crashed["rounds"]] == [0, 1]  # nothing of round 2 recorded
    # ... the uninterrupted reference, with the config the SuperLink gives the run ...
    full = tmp / "outputs" / "full"
    run_in_process(app_config(ROOT, [TINY, SETUP, f"output.dir='{full.parent}' "
                                     "output.run-name='full'"]), NODES)  # fmt: skip
    # Execute: ... and the killed run resumed from its checkpoint
    code, out, resumed = run_app(tmp, SETUP + " output.resume=true", supernodes=NODES,
                                 run_name="killed")  # fmt: skip
    assert code == 0, out[-4000:]
    return read_metrics(tmp, "full"), resumed, full, killed


def test_killed_in_round_2_and_resumed_equals_uninterrupted(runs):
    # Prepare
    reference, resumed, full, killed = runs
    # Assert: the same tensors, bit for bit, and the same record of every round
    assert resumed["resumed_after_round"] == 1
    assert _tensors(killed) == _tensors(full)
    rows = [{k: r.get(k) for k in SAME} for r in resumed["rounds"]]
    assert rows == [{k: r.get(k) for k in SAME} for r in reference["rounds"]]
    assert [r["round"] for r in rows] == [0, 1, 2]


def test_rolora_sends_b_then_a_and_resumes_on_the_right_parity(runs):
    # Prepare
    _, resumed, _, killed = runs
    up = [reply_bytes(SETUP, r) for r in (1, 2)]
    # Assert: round 1 (before the kill) sent B and the head, round 2 (after the resume) A
    # and the head: on timm's fused qkv B is 3× A, so round 2 is the smaller; both
    # factors are in the final global model
    assert [r["bytes_up"] for r in resumed["rounds"][1:]] == [SAMPLED * u for u in up]
    assert up[0] > up[1]
    keys = _tensors(killed)
    assert any(".lora_A." in k for k in keys) and any(".lora_B." in k for k in keys)


def test_central_dp_records_cumulative_epsilon_per_round(runs):
    # Prepare: 2 of 4 clients without replacement, replace-one: noise multiplier σ/2
    # (sensitivity 2C), from an accountant of our own
    _, resumed, _, _ = runs
    accountant = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    rows = resumed["rounds"][1:]
    # Assert: round 2's ε (made after the resume) composes round 1's release too
    for row in rows:
        assert not row["failed_round"], row["failure"]
        accountant.compose(dp_event.SampledWithoutReplacementDpEvent(
            NODES, SAMPLED, dp_event.GaussianDpEvent(SIGMA / 2)))  # fmt: skip
        assert row["dp_sample_rate"] == SAMPLED / NODES and row["dp_releases"] == row["round"]
        assert row["dp_epsilon"] == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-9)
    assert rows[0]["dp_epsilon"] < rows[1]["dp_epsilon"]
