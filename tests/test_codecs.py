"""Wire codecs: round trips, their error bounds, top-k's choice, error feedback, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedpeft import faults, wire
from fedpeft.codecs import CODECS, CodecParams, topk_count
from fedpeft.config import ConfigError, parse_run_config

SHAPES = {"blocks.0.attn.qkv.lora_A": (8, 384), "head.weight": (10, 384), "head.bias": (10,)}


def _arrays(seed: int = 0, scale: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}


def _codec(name: str, **params):
    return CODECS[name](CodecParams(**params))


@pytest.mark.parametrize("name", CODECS.names())
def test_every_codec_round_trips_through_an_arrayrecord(name):
    # Prepare
    codec, x = _codec(name, int8_block=64), _arrays()

    # Execute: through Flower's Array serialisation, as on the wire
    record = ArrayRecord({k: Array(v.numpy()) for k, v in wire.encode(x, codec).items()})
    decoded = wire.decode(record, SHAPES, codec)

    # Assert: the parts match the spec; the values within the codec's precision
    assert not isinstance(decoded, str), decoded
    for key, value in x.items():
        spec = codec.spec(value.shape)
        for part, (dtype, shape) in spec.items():
            if part in codec.shared:  # one Array for all tensors: int8's scales
                shared = record[wire.part_key("", part)].numpy()
                assert shared.dtype == np.dtype(dtype)
                assert shared.shape == (sum(codec.spec(s)[part][1][0] for s in SHAPES.values()),)
                continue
            assert record[wire.part_key(key, part)].numpy().dtype == np.dtype(dtype)
            assert tuple(record[wire.part_key(key, part)].numpy().shape) == shape
        assert decoded[key].dtype == np.float32 and decoded[key].shape == value.shape
        if name == "none":
            np.testing.assert_array_equal(decoded[key], value)
        elif name == "fp16":  # 10 mantissa bits: relative error <= 2^-11 (normal range)
            np.testing.assert_allclose(decoded[key], value, rtol=2**-11, atol=2**-24)
        elif name == "bf16":  # 7 mantissa bits: relative error <= 2^-8
            np.testing.assert_allclose(decoded[key], value, rtol=2**-8, atol=0)


def test_bf16_bits_are_torch_bfloat16():
    # Prepare: values that round (to nearest even) differently from truncation
    x = np.array([1.0 + 2**-8 + 2**-10, -3.14159, 65504.0, 1e-30, 0.0], np.float32)

    # Execute
    bits = _codec("bf16").encode(x)[""]

    # Assert
    expected = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bits, expected)
    assert bits.dtype == np.uint16


@pytest.mark.parametrize("block", [0, 1, 7, 64, 10_000])
def test_int8_error_is_at_most_half_a_scale_per_element(block):
    # Prepare: a tensor whose size is no multiple of most blocks, with one all-zero block
    x = np.random.default_rng(1).standard_normal((13, 37)).astype(np.float32)
    x[0, :] = 0.0
    codec = _codec("int8", int8_block=block)

    # Execute
    parts = codec.encode(x)
    decoded = codec.decode(parts, x.shape)

    # Assert
    size, per = x.size, block if block else x.size
    scales = np.repeat(parts["scale"], per)[:size].reshape(x.shape)
    assert parts["scale"].shape == (-(-size // per),)
    assert (parts["scale"] > 0).all() and np.isfinite(parts["scale"]).all()
    assert (np.abs(decoded - x) <= scales / 2 + 1e-7).all()
    assert np.abs(parts[""]).max() <= 127
    assert codec.check(parts, x.shape) is None


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_topk_keeps_exactly_the_largest_magnitudes(fraction):
    # Prepare: distinct magnitudes, so the top k is unique
    rng = np.random.default_rng(2)
    x = (rng.permutation(500).astype(np.float32) + 1) * rng.choice([-1, 1], 500)
    x = x.reshape(20, 25).astype(np.float32)
    codec = _codec("topk", topk_fraction=fraction)

    # Execute
    parts = codec.encode(x)
    decoded = codec.decode(parts, x.shape)

    # Assert
    k = topk_count(x.size, fraction)
    assert parts[""].shape == parts["index"].shape == (k,)
    kept = set(np.argsort(-np.abs(x.reshape(-1)))[:k].tolist())
    assert set(parts["index"].tolist()) == kept
    assert (np.diff(parts["index"]) > 0).all()
    np.testing.assert_array_equal(decoded.reshape(-1)[sorted(kept)], x.reshape(-1)[sorted(kept)])
    assert np.count_nonzero(decoded) == k
    assert codec.check(parts, x.shape) is None


@pytest.mark.parametrize("name", ["int8", "topk", "fp16"])
def test_error_feedback_delivers_the_sum_of_the_true_updates(name):
    # Prepare: five rounds of updates against a fixed received model
    codec, state = _codec(name, topk_fraction=0.05), RecordDict()
    received, arrived, true = _arrays(0, 1.0), {}, {}

    # Execute
    for r in range(5):
        update = _arrays(10 + r)
        trained = {k: received[k] + update[k] for k in received}
        record = wire.encode_update(trained, received, codec, state)
        got = wire.decode(record, SHAPES, codec)
        for k in SHAPES:
            arrived[k] = arrived.get(k, 0) + got[k]
            true[k] = true.get(k, 0) + (trained[k] - received[k])

    # Assert: what arrived plus what is still held back is what was trained
    residual = state.array_records[wire.RESIDUAL]
    for k in SHAPES:
        np.testing.assert_allclose(arrived[k] + residual[k].numpy(), true[k], atol=1e-6)
    if name == "topk":  # and top-k without feedback would have lost most of it
        assert np.abs(residual["head.weight"].numpy()).sum() > 0


def test_a_round_that_sends_part_of_the_set_keeps_the_others_residual():
    # Prepare: round 1 sends every tensor; round 2 (RoLoRA's other factor's turn) only
    # the head: the factor's residual from round 1 must wait for its next turn
    codec, state = _codec("int8"), RecordDict()
    received = _arrays(0, 1.0)
    wire.encode_update({k: v + _arrays(1)[k] for k, v in received.items()}, received, codec,
                       state)  # fmt: skip
    first = {k: v.numpy().copy() for k, v in state.array_records[wire.RESIDUAL].items()}
    head = {k: v for k, v in received.items() if k.startswith("head.")}
    # Execute
    record = wire.encode_update({k: v + _arrays(2)[k] for k, v in head.items()}, head, codec,
                                state)  # fmt: skip
    # Assert: the reply carries the head only; the factor's residual is round 1's, the
    # head's is round 2's
    residual = state.array_records[wire.RESIDUAL]
    assert set(wire.decode(record, {k: SHAPES[k] for k in head}, codec)) == set(head)
    assert set(residual) == set(SHAPES)
    factor = "blocks.0.attn.qkv.lora_A"
    assert residual[factor].numpy().tobytes() == first[factor].tobytes()
    assert residual["head.weight"].numpy().tobytes() != first["head.weight"].tobytes()


def test_without_feedback_no_state_is_kept():
    # Prepare
    codec, state = _codec("int8"), RecordDict()
    received = _arrays(0)
    trained = {k: v + 0.1 for k, v in received.items()}

    # Execute
    wire.encode_update(trained, received, codec, None)

    # Assert
    assert wire.RESIDUAL not in state


def _encoded(name: str, mode: str = "", **params) -> tuple[ArrayRecord, RecordDict]:
    codec = _codec(name, **params)
    record = faults.corrupt_encoding(mode, wire.encode(_arrays(), codec))
    content = RecordDict({"arrays": record})
    content[wire.COMM] = faults.announce(mode, wire.announce(codec))
    return record, content


@pytest.mark.parametrize(
    ("name", "mode", "reason"),
    [
        ("int8", "part-dtype", "is float64[10, 384], expected int8[10, 384]"),
        ("int8", "part-shape", "is int8[3841], expected int8[10, 384]"),
        ("int8", "part-missing", "missing ['#scale']"),
        ("int8", "scale-nan", "int8 scales must be finite and > 0"),
        ("int8", "scale-zero", "int8 scales must be finite and > 0"),
        ("topk", "part-missing", "missing ['head.weight#index']"),
        ("topk", "index-range", "top-k indices must be in [0, 3840)"),
        ("topk", "index-duplicate", "top-k indices repeat"),
        ("topk", "index-unsorted", "top-k indices are not sorted ascending"),
        ("topk", "topk-count", "is float32[383], expected float32[384]"),
        ("fp16", "part-dtype", "is float64[10, 384], expected float16[10, 384]"),
    ],
)
def test_each_malformed_encoding_is_refused_by_name(name, mode, reason):
    # Prepare
    record, _ = _encoded(name, mode)

    # Execute
    result = wire.decode(record, SHAPES, _codec(name))

    # Assert
    assert isinstance(result, str)
    assert reason in result


def test_the_announced_codec_is_read_back_and_a_forged_one_differs():
    # Prepare / Execute
    _, honest = _encoded("int8")
    _, forged = _encoded("int8", "codec-name")

    # Assert
    assert wire.announced(honest) == "int8"
    assert wire.announced(forged) == "fp16"
    assert wire.announced(RecordDict({"c": ConfigRecord({"codec": "int8"})})) is None


def test_downlink_arrays_decode_only_in_the_configured_codec():
    # Prepare
    codec = _codec("fp16")
    config = ConfigRecord({wire.DOWNLINK_KEY: "fp16"})
    content = RecordDict({"arrays": wire.encode(_arrays(), codec), "config": config})

    # Execute
    got = wire.received(content, codec)

    # Assert
    assert {k: got[k].numpy().dtype for k in got} == {k: np.float32 for k in SHAPES}
    with pytest.raises(ValueError, match=r"sent 'fp16'-encoded arrays; this run's comm\.downlink"):
        wire.received(content, _codec("bf16"))
    plain = RecordDict({"arrays": ArrayRecord(), "config": ConfigRecord({})})
    with pytest.raises(ValueError, match="sent 'none'-encoded arrays"):
        wire.received(plain, codec)


def test_comm_config_refuses_lossy_downlinks_and_bad_values():
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"comm\.downlink='topk': int8 and topk are update"):
        parse_run_config({"comm.downlink": "topk"})
    with pytest.raises(ConfigError, match=r"comm\.uplink='zip': unknown wire codec"):
        parse_run_config({"comm.uplink": "zip"})
    with pytest.raises(ConfigError, match=r"comm.topk-fraction=0.0: must be in \(0, 1\]"):
        parse_run_config({"comm.topk-fraction": 0.0})
    with pytest.raises(ConfigError, match="'scale-nan' malforms an encoded reply: it needs"):
        parse_run_config({"comm.uplink": "topk", "fault.modes": "0:scale-nan"})
    assert parse_run_config({"comm.uplink": "int8"}).comm.feedback
    assert not parse_run_config({"comm.uplink": "fp16"}).comm.feedback
    assert parse_run_config({"comm.uplink": "fp16", "comm.error-feedback": "on"}).comm.feedback
    assert not parse_run_config({"comm.uplink": "topk", "comm.error-feedback": "off"}).comm.feedback
    assert parse_run_config({}).comm.codec("uplink").name == "none"
