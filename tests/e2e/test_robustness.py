"""Faulty clients and drop-outs in real simulations: the run completes, weighting is right.

One 6-client run holds the raising, the NaN and the dropped clients at once (each test
below checks one of them in its rounds); its global model is compared with FedAvg of
each round's healthy clients alone, trained in this process by the reference loop. The
run is FFA-LoRA (``peft.lora.federation='ffa'``: A frozen, only B and the head travel),
so it is also that variant's real ``flwr run`` (plain LoRA's is ``test_simulation.py``);
the reference loop builds the same variant from the same config. A
run stopped by consecutive failed rounds is tested on the ServerApp alone
(``tests/test_server_main.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from benchmarks.plain_loop import app_config, fedavg_round
from fedpeft.arrays import trainable_state
from fedpeft.config import FaultConfig
from fedpeft.data import load_partition, load_test
from fedpeft.device import set_threads
from fedpeft.engine import make_engine
from fedpeft.faults import drops_out
from fedpeft.model import build_model
from fedpeft.training import evaluate
from tests.e2e.helpers import TINY, run_app

pytestmark = pytest.mark.e2e
SEED = 42  # pyproject's default seed
CLIENTS, ROUNDS = 6, 2
FAULTS = FaultConfig(modes="0:raise,1:nan", dropout=0.3)
# fp32: the reference loop and the ClientApp then compute the same numbers
SETUP = (
    f"server.num-rounds={ROUNDS} server.min-train-nodes={CLIENTS} train.precision='fp32' "
    f"fault.modes='{FAULTS.modes}' fault.dropout={FAULTS.dropout} "
    "peft.lora.federation='ffa'"
)


def _outcomes(server_round: int) -> dict[int, str]:
    """Partition → what it does this round: raise, nan, drop (seeded) or train."""
    modes = FAULTS.by_partition()
    out = {}
    for p in range(CLIENTS):
        if modes.get(p) == "raise":  # raising comes before the drop-out draw
            out[p] = "raise"
        elif drops_out(FAULTS, SEED, server_round, p):
            out[p] = "drop"
        else:
            out[p] = modes.get(p, "train")
    return out


OUTCOMES = {r: _outcomes(r) for r in range(1, ROUNDS + 1)}


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faulty")
    code, out, metrics = run_app(tmp, SETUP, supernodes=CLIENTS)
    assert code == 0, out[-4000:]
    assert metrics["status"] == "completed"
    return metrics, load_file(tmp / "outputs" / "e2e" / "final_trainable.safetensors")


def _healthy_alone() -> tuple[float, dict[str, np.ndarray]]:
    """FedAvg of each round's training clients only (the ClientApp's partitions, seeds
    and training, one process): accuracy and the final trainable tensors."""
    cfg = app_config([TINY, SETUP])
    test = load_test(cfg.data, cfg.seed, cfg.model.img_size)
    model = build_model(cfg.model, cfg.peft, test.num_classes, cfg.seed)
    set_threads(cfg.train.num_threads)  # as the run's ClientApp
    engine = make_engine(model, cfg.train.device, cfg.train.precision, cfg.train.augment)
    glob = {k: v.clone() for k, v in trainable_state(model).items()}
    for server_round, outcomes in OUTCOMES.items():
        parts = {p: load_partition(cfg.data, cfg.seed, cfg.model.img_size, p, CLIENTS)
                 for p, what in outcomes.items() if what == "train"}  # fmt: skip
        glob, _ = fedavg_round(model, glob, parts, cfg, engine, server_round)
    accuracy = evaluate(model, test, cfg.server.eval_batch_size, engine).accuracy
    return accuracy, {k: v.numpy() for k, v in glob.items()}


def test_the_seed_exercises_every_fault():
    # the run below means something only if each kind of failure happens in some round
    seen = {what for outcomes in OUTCOMES.values() for what in outcomes.values()}
    assert seen == {"raise", "nan", "drop", "train"}, OUTCOMES


def test_raising_and_nan_clients_cost_under_two_points(faulty_run):
    # Prepare: the global model the healthy clients produce alone
    base, reference = _healthy_alone()
    # Execute
    metrics, got = faulty_run
    final = metrics["rounds"][-1]["accuracy"]
    # Assert: the faults are recorded and the global model is the healthy clients' one
    # (plain FedAvg would average the NaN in)
    for row in metrics["rounds"][1:]:
        outcomes = OUTCOMES[row["round"]]
        for p, what in outcomes.items():
            if what == "raise":
                assert "raises in training" in row["errors"][str(p)]
            elif what == "nan":
                assert "NaN" in row["rejections"][str(p)]
        assert not row["failed_round"]
    # Baseline: the two differ by at most 2.2e-8 here (the server sums in another order,
    # 2026-12-02); 1e-6 is far below what one NaN or one extra client would move.
    assert got.keys() == reference.keys()
    assert not [k for k in got if ".lora_A." in k] and any(".lora_B." in k for k in got)
    for key, value in reference.items():
        np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-6, err_msg=key)
    assert abs(final - base) <= 0.02, (base, final)
    assert final > 2 * 0.1  # and it learned: twice chance on 10 classes
    assert final > metrics["rounds"][0]["accuracy"]  # and above the untrained round 0


def test_thirty_percent_dropouts_are_weighted_out(faulty_run):
    metrics, _ = faulty_run
    for row in metrics["rounds"][1:]:
        # Prepare: who drops is seeded by (seed, round, partition), so predictable
        outcomes = OUTCOMES[row["round"]]
        gone = {p for p, what in outcomes.items() if what == "drop"}
        training = {p for p, what in outcomes.items() if what == "train"}
        # Assert: the dropped clients are recorded as failed, the others aggregated with
        # their own num-examples as weights (the FedAvg arithmetic is unit-tested with
        # golden values)
        dropped = {int(p) for p, e in row["errors"].items() if "drops out" in e}
        assert dropped == gone
        survivors = {int(p): w for p, w in row["weights"].items()}
        assert set(survivors) == training
        by_partition = {int(m["partition-id"]): m["num-examples"] for m in row["client_metrics"]}
        assert survivors == {p: by_partition[p] for p in survivors}
        assert row["accepted"] == len(training)
