"""SecAgg+ as steps of a round: the real ClientApp handlers behind a Grid, a tiny model.

The server runs setup → share keys → masked → unmask through ``make_strategy`` (the
ServerApp's wiring); each node trains with the plain train handler's code path.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

import client_app.app as client
from fedpeft import protocol
from fedpeft.config import ConfigError, parse_run_config
from fedpeft.secagg import encoding
from server_app.app import make_strategy
from server_app.secagg import round_params
from tests.secagg_grid import RUN, AppGrid

SIZES = [12, 16, 20, 24]
BASE = {"server.fraction-train": 1.0, "server.min-train-nodes": 4,
        "server.infer-partitions": False}  # fmt: skip


def _round(grid: AppGrid, run: dict, monkeypatch) -> tuple[dict, object]:
    """One round of ``run`` on ``grid``: the next global arrays and the round's stats."""
    monkeypatch.setattr(client, "_prepare", grid.prepare)
    grid.configure({**RUN, **BASE, **run})
    cfg = grid.cfg
    initial = ArrayRecord({k: Array(v) for k, v in grid.initial().items()})
    strategy = make_strategy(cfg, initial)
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=1, timeout=5.0)
    return {k: v.numpy() for k, v in result.arrays.items()}, strategy.rounds[1]


def _plain_updates(grid: AppGrid, sent: dict) -> dict[int, tuple[np.ndarray, int]]:
    """Partition → (flat update in key order, num-examples) of the plain round's replies."""
    out = {}
    for msg in grid.received:
        if msg.metadata.message_type == protocol.TRAIN and not msg.has_error():
            arrays = msg.content[protocol.ARRAYS]
            flat = np.concatenate([arrays[k].numpy().ravel() - sent[k].ravel()
                                   for k in sorted(sent)])  # fmt: skip
            metrics = msg.content[protocol.METRICS]
            out[int(metrics[protocol.PARTITION_ID])] = (flat, int(metrics[protocol.NUM_EXAMPLES]))
    return out


def _flat(arrays: dict) -> np.ndarray:
    return np.concatenate([np.asarray(arrays[k], np.float64).ravel() for k in sorted(arrays)])


def _expected(updates, partitions, clip: float, sent: dict) -> np.ndarray:
    """Plain FedAvg of the same clipped updates, applied to ``sent``."""
    total = sum(updates[p][1] * np.clip(updates[p][0], -clip, clip) for p in partitions)
    weight = sum(updates[p][1] for p in partitions)
    return _flat(sent) + total / weight


def _tolerance(cfg_run: dict, n: int, weight: float, clip: float) -> float:
    cfg = parse_run_config({**cfg_run, "secagg.enabled": True})
    params = round_params(cfg.secagg, n, 64.0)
    bound_update, bound_weight = encoding.error_bound(params, n)
    return (bound_update + bound_weight * clip) / (weight - bound_weight) + 1e-7


@pytest.mark.parametrize("clip", [1.0, 0.002])
def test_secagg_round_is_fedavg_of_the_clipped_updates(monkeypatch, clip):
    # Prepare: a plain round and its replies (the updates each node would send in clear)
    grid = AppGrid(SIZES)
    sent = grid.initial()
    plain, _ = _round(grid, {}, monkeypatch)
    updates = _plain_updates(grid, sent)
    grid.received.clear()

    # Execute: the same round with SecAgg+ (the same training from the same arrays)
    secure, stats = _round(grid, {"secagg.enabled": True, "secagg.clipping-range": clip},
                           monkeypatch)  # fmt: skip

    # Assert: sent + Σ w·clip(u) / Σ w within the quantization error; clip 1 clips nothing,
    # so it is plain FedAvg itself; bytes of every stage were counted
    expected = _expected(updates, range(4), clip, sent)
    tol = _tolerance(grid.run, 4, sum(SIZES), clip)
    assert not stats.failure and stats.accepted == 4
    np.testing.assert_allclose(_flat(secure), expected, rtol=0, atol=tol)
    if clip == 1.0:
        assert max(np.abs(u).max() for u, _ in updates.values()) < clip
        np.testing.assert_allclose(_flat(secure), _flat(plain), rtol=0, atol=tol + 1e-6)
    else:
        assert np.abs(_flat(secure) - _flat(plain)).max() > 10 * tol  # clipping did bite
    assert set(stats.secagg_bytes) == set(protocol.SECAGG_STAGES)
    assert all(b > 0 for b in stats.secagg_bytes.values())
    assert stats.bytes_down + stats.bytes_up == sum(stats.secagg_bytes.values())


@pytest.mark.parametrize("federation", ["ffa", "fedsa", "rolora"])
def test_lora_variants_aggregate_what_they_send_up(monkeypatch, federation):
    # Prepare: LoRA whose nodes send a subset (FFA: B and the head; FedSA: A and the head;
    # RoLoRA: round 1's factor and the head); the plain round's result
    grid = AppGrid(SIZES, {"peft.method": "lora", "peft.lora.federation": federation})
    run = {"peft.method": "lora", "peft.lora.federation": federation}
    plain, _ = _round(grid, run, monkeypatch)

    # Execute
    secure, stats = _round(grid, {**run, "secagg.enabled": True}, monkeypatch)

    # Assert: the same arrays as plain FedAvg, within the quantization error
    assert not stats.failure and stats.accepted == 4
    assert sorted(secure) == sorted(plain)
    tol = _tolerance(grid.run, 4, sum(SIZES), 1.0)
    np.testing.assert_allclose(_flat(secure), _flat(plain), rtol=0, atol=tol + 1e-6)


def test_the_server_never_holds_one_update_in_clear(monkeypatch):
    # Prepare: the updates the nodes would send in clear
    grid = AppGrid(SIZES)
    sent = grid.initial()
    _round(grid, {}, monkeypatch)
    updates = _plain_updates(grid, sent)
    grid.received.clear()

    # Execute: a SecAgg+ round
    _round(grid, {"secagg.enabled": True}, monkeypatch)

    # Assert: no reply carries float arrays, metrics or an example count; a masked vector
    # decoded alone is noise, not its node's update
    masked = [m for m in grid.received
              if m.metadata.message_type.endswith(protocol.SECAGG_MASKED_ACTION)]  # fmt: skip
    stages = [m for m in grid.received if m.metadata.message_type != protocol.QUERY]
    assert len(masked) == 4 and len(stages) == 16  # four stages, four nodes
    for msg in stages:
        assert set(msg.content.keys()) == {protocol.SECAGG}
        for record in msg.content.array_records.values():
            assert all(a.dtype == "uint32" for a in record.values())
        assert not msg.content.metric_records
    for msg in masked:
        vector = msg.content[protocol.SECAGG][protocol.SECAGG_MASKED].numpy()
        update = updates[msg.metadata.src_node_id - 1][0]
        assert abs(np.corrcoef(vector[:-1].astype(np.float64), update)[0, 1]) < 0.3


def test_one_node_dropped_after_share_keys_is_recovered(monkeypatch):
    # Prepare: the plain updates; node 2 (partition 1) never answers the masked stage
    grid = AppGrid(SIZES)
    sent = grid.initial()
    _round(grid, {}, monkeypatch)
    updates = _plain_updates(grid, sent)
    grid.received.clear()
    masked_type = f"{protocol.TRAIN}.{protocol.SECAGG_MASKED_ACTION}"
    grid.drop = lambda message_type, node: message_type == masked_type and node == 2

    # Execute
    secure, stats = _round(grid, {"secagg.enabled": True}, monkeypatch)

    # Assert: the round is the mean of the three survivors; node 2 recorded as silent
    assert not stats.failure and stats.accepted == 3 and stats.silent == [2]
    weight = SIZES[0] + SIZES[2] + SIZES[3]
    np.testing.assert_allclose(_flat(secure), _expected(updates, (0, 2, 3), 1.0, sent), rtol=0,
                               atol=_tolerance(grid.run, 3, weight, 1.0))  # fmt: skip


def test_a_malformed_masked_vector_is_refused_and_its_node_recovered(monkeypatch):
    # Prepare: node 3 replies its masked vector as float32 (what a clear update would be)
    grid = AppGrid(SIZES)

    def tamper(reply: Message) -> Message:
        record = reply.content.get(protocol.SECAGG)
        if reply.metadata.src_node_id == 3 and isinstance(record, ArrayRecord):
            vector = record[protocol.SECAGG_MASKED].numpy().astype(np.float32)
            record[protocol.SECAGG_MASKED] = Array(vector)
        return reply

    grid.tamper = tamper

    # Execute
    _, stats = _round(grid, {"secagg.enabled": True}, monkeypatch)

    # Assert: refused with its reason; the round completes on the other three
    assert "secagg masked-vector: masked vector of float32" in stats.rejected[3]
    assert not stats.failure and stats.accepted == 3


def test_too_many_drop_outs_fail_the_round_and_keep_the_global(monkeypatch):
    # Prepare: 2 of 4 nodes drop after share-keys; the threshold is 4 // 2 + 1 = 3
    grid = AppGrid(SIZES)
    masked_type = f"{protocol.TRAIN}.{protocol.SECAGG_MASKED_ACTION}"
    grid.drop = lambda message_type, node: message_type == masked_type and node in (1, 4)

    # Execute
    secure, stats = _round(grid, {"secagg.enabled": True}, monkeypatch)

    # Assert: failed, the reason recorded, the global arrays as they were
    assert stats.failure.startswith("secagg: 2 nodes sent a masked vector")
    assert not stats.aggregated
    for key, value in grid.initial().items():
        np.testing.assert_array_equal(secure[key], value)


def test_a_node_out_of_step_is_refused_before_it_trains(monkeypatch):
    # Prepare: a masked message to a node that ran no setup
    grid = AppGrid([8])
    monkeypatch.setattr(client, "_prepare", lambda *a: pytest.fail("trained out of step"))
    msg = Message(RecordDict({protocol.SECAGG: ConfigRecord({})}), dst_node_id=1,
                  message_type=f"{protocol.TRAIN}.{protocol.SECAGG_MASKED_ACTION}")  # fmt: skip

    # Execute / Assert: the stage is refused, naming the stage it needs
    with pytest.raises(ValueError, match="needs stage 'share-keys'"):
        client.app(msg, grid.contexts[1])


@pytest.mark.parametrize(("key", "value"), [
    ("server.aggregation", "median"),
    ("server.max-update-norm", 1.0),
    ("comm.uplink", "int8"),
    ("server.guard.round-factor", 3.0),
    ("server.guard.model-factor", 10.0),
    ("peft.head.init", "ncm"),
    ("peft.lora.ranks", "2,4"),
    ("server.clients-per-round", 1),
    ("fault.modes", "0:nan"),
])  # fmt: skip
def test_refused_combinations_name_both_keys(key, value):
    # Execute
    with pytest.raises(ConfigError) as caught:
        parse_run_config({"secagg.enabled": True, key: value})

    # Assert
    assert key in str(caught.value) and "secagg.enabled" in str(caught.value)


def test_the_guard_defaults_and_central_dp_compose():
    # Execute: the guard at its defaults (every run config carries them) or off; central DP
    at_defaults = parse_run_config({"secagg.enabled": True, "server.guard.round-factor": 5.0})
    off = parse_run_config({"secagg.enabled": True, "server.guard.model-factor": 0.0})
    central = parse_run_config({"secagg.enabled": True, "dp.mode": "central"})

    # Assert
    assert at_defaults.secagg.enabled and off.secagg.enabled and central.dp.mode == "central"


def test_secagg_keys_are_checked_at_start_up():
    # Execute / Assert: each bad value names its key and value
    for key, value in (("secagg.num-shares", 4), ("secagg.threshold", 2),
                       ("secagg.clipping-range", 0.0), ("secagg.modulus-bits", 24)):  # fmt: skip
        run = {key: value, "secagg.num-shares": 5} if key == "secagg.threshold" else {key: value}
        with pytest.raises(ConfigError, match=rf"{key}={value!r}"):
            parse_run_config(run)


def test_central_dp_noises_the_unmasked_sum(monkeypatch):
    # Prepare: central DP without noise: the mean of the norm-clipped updates, unweighted
    grid = AppGrid(SIZES)
    sent = grid.initial()
    _round(grid, {}, monkeypatch)
    updates = _plain_updates(grid, sent)
    grid.received.clear()
    run = {"secagg.enabled": True, "dp.mode": "central", "dp.clip-norm": 0.01,
           "dp.noise-multiplier": 0.0}  # fmt: skip

    # Execute
    secure, stats = _round(grid, run, monkeypatch)

    # Assert: sent + Σ clip_C(u) / m, ε recorded
    clipped = [u * min(1.0, 0.01 / np.linalg.norm(u)) for u, _ in updates.values()]
    expected = _flat(sent) + sum(clipped) / 4
    assert not stats.failure and stats.dp["dp_releases"] == 1
    step = 2 * 1.0 / (2**24 - 1)  # weight 1, clipping range 1: one quantization step
    np.testing.assert_allclose(_flat(secure), expected, rtol=0, atol=4 * step / 4 + 1e-7)
