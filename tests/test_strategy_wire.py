"""PeftFedAvg with compression: the encoded downlink, decoded updates, refused encodings."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedpeft import faults, wire
from fedpeft.arrays import wire_bytes
from fedpeft.codecs import CODECS, CodecParams
from server_app.strategy import PeftFedAvg
from server_app.validation import reference_specs
from tests.fakes import FakeGrid, head_update

# A non-zero global model (±1.5 and 0.5: exact in fp16).
REF = ArrayRecord({k: Array(v + 0.5) for k, v in head_update(1.0).items()})


def _codec(name: str, **params):
    return CODECS[name](CodecParams(**params))


def _strategy(uplink: str, downlink: str = "none", **params) -> PeftFedAvg:
    return PeftFedAvg(reference=reference_specs(REF), min_train_nodes=1, min_available_nodes=1,
                      uplink=_codec(uplink, **params), downlink=_codec(downlink))  # fmt: skip


def _round(strategy: PeftFedAvg, nodes: list[int]) -> dict[int, Message]:
    grid = FakeGrid({n: n for n in nodes}, {})
    messages = list(strategy.configure_train(1, REF, ConfigRecord({"lr": 0.1}), grid))
    for i, msg in enumerate(messages):  # give them ids, as pushing them would
        msg.metadata.__dict__["_message_id"] = f"id-{i}"
    return {m.metadata.dst_node_id: m for m in messages}


def _reply(instr: Message, update: dict, n: int, codec_name: str, mode: str = "", **params):
    codec = _codec(codec_name, **params)
    record = faults.corrupt_encoding(mode, wire.encode(update, codec))
    content = RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": n})})
    content[wire.COMM] = faults.announce(mode, wire.announce(codec))
    return Message(content, reply_to=instr)


def test_int8_updates_are_decoded_added_to_the_sent_model_and_averaged():
    # Prepare: updates of ±1 and ±3 (one scale per tensor: exact in int8), weights 1 and 3
    strategy = _strategy("int8", "fp16")
    sent = _round(strategy, [1, 2])
    replies = [_reply(sent[1], head_update(1.0), 1, "int8"),
               _reply(sent[2], head_update(3.0), 3, "int8")]  # fmt: skip

    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)

    # Assert: the global model moves by the weighted mean update (1 + 9) / 4 = 2.5
    for key, value in head_update(2.5).items():
        np.testing.assert_allclose(arrays[key].numpy(), REF[key].numpy() + value, rtol=1e-6)
    fields = strategy.rounds[1].record_fields(str)
    assert fields["accepted"] == 2 and fields["rejections"] == {}
    replies_fp32 = [{k: Array(REF[k].numpy() + v) for k, v in head_update(u).items()}
                    for u in (1.0, 3.0)]  # fmt: skip
    fp32_up = sum(wire_bytes(ArrayRecord(r)) for r in replies_fp32)
    assert fields["uplink_ratio"] == pytest.approx(fields["bytes_up"] / fp32_up)
    assert fields["downlink_ratio"] == pytest.approx(fields["bytes_down"] / (2 * wire_bytes(REF)))
    # 8-value tensors: the .npy headers and the scales' own Arrays outweigh the 3 bytes saved
    # per value (benchmarks/communication.py measures the real trainable sets)
    assert fields["uplink_ratio"] > 1


def test_the_downlink_travels_in_fp16_and_names_its_codec():
    # Prepare
    strategy = _strategy("int8", "fp16")

    # Execute
    messages = list(_round(strategy, [1]).values())

    # Assert
    content = messages[0].content
    assert content["config"][wire.DOWNLINK_KEY] == "fp16"
    assert {content["arrays"][k].numpy().dtype for k in content["arrays"]} == {np.dtype(np.float16)}
    decoded = wire.received(content, _codec("fp16"))
    for key in REF:
        np.testing.assert_array_equal(decoded[key].numpy(), REF[key].numpy())  # exact: ±1.5, 0.5


@pytest.mark.parametrize(
    ("codec", "mode", "reason"),
    [
        ("int8", "codec-name", "reply names codec 'fp16'; this run's comm.uplink is 'int8'"),
        ("int8", "part-dtype", "array 'head.weight' is float64[2, 3], expected int8[2, 3]"),
        ("int8", "part-shape", "array 'head.weight' is int8[7], expected int8[2, 3]"),
        ("int8", "part-missing", "missing ['#scale']"),
        ("int8", "scale-nan", "int8 encoding of 'head.bias': int8 scales must be finite"),
        ("int8", "scale-zero", "int8 scales must be finite and > 0"),
        ("topk", "index-range", "top-k indices must be in [0, 6)"),
        ("topk", "index-duplicate", "top-k indices repeat"),
        ("topk", "index-unsorted", "top-k indices are not sorted ascending"),
        ("topk", "topk-count", "array 'head.weight' is float32[2], expected float32[3]"),
        ("topk", "part-missing", "missing ['head.weight#index']"),
    ],
)
def test_a_malformed_encoding_is_rejected_by_name_and_the_round_continues(codec, mode, reason):
    # Prepare: one honest client, one malformed
    strategy = _strategy(codec, topk_fraction=0.5)
    sent = _round(strategy, [1, 2])
    replies = [_reply(sent[1], head_update(1.0), 1, codec, topk_fraction=0.5),
               _reply(sent[2], head_update(2.0), 1, codec, mode, topk_fraction=0.5)]  # fmt: skip

    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)

    # Assert
    assert arrays is not None
    rejected = strategy.rounds[1].rejected
    assert list(rejected) == [2]
    assert reason in rejected[2]


def test_an_fp32_reply_is_rejected_when_the_uplink_encodes():
    # Prepare: a client that ignores comm.uplink and sends plain weights
    strategy = _strategy("int8")
    sent = _round(strategy, [1])
    content = RecordDict({"arrays": REF, "metrics": MetricRecord({"num-examples": 1})})

    # Execute
    strategy.aggregate_train(1, [Message(content, reply_to=sent[1])])

    # Assert
    assert strategy.rounds[1].rejected[1] == (
        "reply names codec None; this run's comm.uplink is 'int8'"
    )


def test_an_fp16_update_past_its_range_is_rejected_as_not_finite():
    # Prepare: 1e5 does not fit in fp16 (max 65,504): it arrives as inf
    strategy = _strategy("fp16")
    sent = _round(strategy, [1])

    # Execute
    strategy.aggregate_train(1, [_reply(sent[1], head_update(1e5), 1, "fp16")])

    # Assert
    assert (
        strategy.rounds[1].rejected[1] == "decoded update: array 'head.weight' contains NaN or Inf"
    )
