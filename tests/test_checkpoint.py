"""Checkpoints: bit-identical round trip, no pickle, mismatched setups refused."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from server_app import checkpoint

CONFIG = {
    "peft": {"method": "lora"},
    "model": {"name": "vit_small_patch14_dinov2", "weights": "offline", "img_size": 28},
    "data": {"dataset": "digits"},
}


def _arrays(seed: int = 0) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    return ArrayRecord(
        {
            "a.lora_A": Array(rng.standard_normal((4, 8)).astype(np.float32)),
            "head.bias": Array(rng.standard_normal(10).astype(np.float32)),
        }
    )


def test_arrays_come_back_in_the_models_order_not_the_files(tmp_path):
    # Prepare: the model's order is not sorted (safetensors sorts the keys it stores)
    arrays = ArrayRecord({k: _arrays()[k] for k in ("head.bias", "a.lora_A")})
    fp = checkpoint.fingerprint(CONFIG, arrays)
    checkpoint.save(tmp_path, arrays, 1, {"fingerprint": fp})
    # Execute
    ck = checkpoint.load(tmp_path, fp)
    # Assert: order-dependent steps (central DP's seeded noise) see what they saw before
    assert list(ck.arrays) == ["head.bias", "a.lora_A"]


def test_round_trip_is_bit_identical_and_restores_rng(tmp_path):
    # Prepare
    arrays = _arrays()
    fp = checkpoint.fingerprint(CONFIG, arrays)
    rows = [{"round": 0, "accuracy": 0.1}, {"round": 1, "accuracy": 0.5}]
    torch.manual_seed(3)
    np.random.seed(4)
    checkpoint.save(
        tmp_path, arrays, 1, {"fingerprint": fp, "strategy": {"failed_streak": 1}, "rows": rows}
    )
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    # Execute
    ck = checkpoint.load(tmp_path, fp)
    # Assert
    for key in arrays:
        assert ck.arrays[key].numpy().tobytes() == arrays[key].numpy().tobytes()
    assert ck.server_round == 1 and ck.rows == rows and ck.strategy_state == {"failed_streak": 1}
    assert torch.equal(torch.rand(3), expected_torch)
    assert np.array_equal(np.random.rand(3), expected_np)
    assert not (tmp_path / "checkpoint.safetensors.tmp").exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"peft": {"method": "bias"}}, "method: checkpoint has 'lora', this run has 'bias'"),
        ({"model": {**CONFIG["model"], "name": "vit_base_patch16_224"}}, "model.name"),
    ],
)
def test_checkpoint_of_another_setup_is_refused(tmp_path, change, named):
    arrays = _arrays()
    checkpoint.save(tmp_path, arrays, 2, {"fingerprint": checkpoint.fingerprint(CONFIG, arrays)})
    with pytest.raises(checkpoint.CheckpointError, match=named.replace("(", r"\(")):
        checkpoint.load(tmp_path, checkpoint.fingerprint({**CONFIG, **change}, arrays))


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        checkpoint.load(tmp_path, {})


def test_a_pickle_is_never_unpickled(tmp_path):
    # Prepare: a pickle that would run code if loaded with pickle
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    (tmp_path / "checkpoint.safetensors").write_bytes(pickle.dumps(Boom()))
    # Execute / Assert: rejected as not a checkpoint, nothing executed
    with pytest.raises(checkpoint.CheckpointError, match="not a FedPEFT checkpoint"):
        checkpoint.load(tmp_path, {})


def test_best_round_travels_beside_the_global_tensors_bit_identically(tmp_path):
    # Prepare
    arrays, best = _arrays(0), checkpoint.Best(3, _arrays(1))
    fp = checkpoint.fingerprint(CONFIG, arrays)
    # Execute
    checkpoint.save(tmp_path, arrays, 5, {"fingerprint": fp}, best=best)
    ck = checkpoint.load(tmp_path, fp)
    read = checkpoint.read_best(tmp_path)
    # Assert: the global tensors are exactly the trainable set, the best comes back apart
    assert set(ck.arrays.keys()) == set(arrays.keys()) and ck.server_round == 5
    for kept in (ck.best, read):
        assert kept is not None and kept.server_round == 3
        for key in arrays:
            assert kept.arrays[key].numpy().tobytes() == best.arrays[key].numpy().tobytes()


def test_a_checkpoint_without_a_best_round_reads_as_none(tmp_path):
    # Prepare: as written before best rounds were kept
    arrays = _arrays()
    fp = checkpoint.fingerprint(CONFIG, arrays)
    checkpoint.save(tmp_path, arrays, 1, {"fingerprint": fp})
    # Execute / Assert
    assert checkpoint.load(tmp_path, fp).best is None
    assert checkpoint.read_best(tmp_path) is None
