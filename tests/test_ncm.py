"""FedNCM head initialisation: the centralised class means, malformed statistics refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

import client_app.app as client
from fedpeft.arrays import to_arrayrecord, trainable_state
from fedpeft.config import ConfigError, parse_run_config
from fedpeft.data.tensors import ImageTensors
from fedpeft.engine import make_engine
from fedpeft.ncm import class_feature_sums
from peft_strategies import get_method
from server_app.ncm import check_statistics, head_keys
from server_app.strategy import PeftFedAvg
from server_app.validation import Limits, reference_specs
from tests.conftest import model_input, tiny_vit
from tests.fakes import FakeGrid

CLASSES = 4


def _model(method: str = "lora"):
    model = tiny_vit(CLASSES)
    get_method(method).apply(model, get_method(method).config_cls())
    return model


def _data(n: int, seed: int) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.tensor([i % 3 for i in range(n)])  # class 3 held by nobody
    return ImageTensors(images, labels, CLASSES)


def _strategy(model, **kw) -> PeftFedAvg:
    ref = to_arrayrecord(trainable_state(model))
    return PeftFedAvg(reference_specs(ref), seed=1, fraction_train=1.0, fraction_evaluate=0.0,
                      min_train_nodes=2, min_available_nodes=2, **kw)  # fmt: skip


def _stats_of(model, data):
    sums, counts = class_feature_sums(model, data, 5)
    return lambda sent, rnd: ({"sums": sums, "counts": counts}, len(data))


@pytest.mark.parametrize("method", ["lora", "prompt"])
def test_ncm_head_equals_the_centralised_class_means(method):
    # Prepare: two clients' partitions, and the union
    model = _model(method)
    parts = [_data(7, 0), _data(9, 1)]
    grid = FakeGrid({1: 0, 2: 1}, {1: _stats_of(model, parts[0]), 2: _stats_of(model, parts[1])})
    arrays = to_arrayrecord(trainable_state(model))
    weight_key, bias_key = head_keys(model)
    # Execute
    out = _strategy(model).initialise_head(grid, arrays, (weight_key, bias_key), 10.0)
    # Assert: unit-norm class means of all 16 images' features; class 3 (unseen) stays 0
    with torch.inference_mode():
        model.eval()  # as the clients compute them (prompt dropout off)
        x = torch.cat([model_input(model, p.images) for p in parts])
        feats = model.forward_head(model.forward_features(x), pre_logits=True).double()
    labels = torch.cat([p.labels for p in parts])
    for c in range(3):
        m = feats[labels == c].mean(0)
        np.testing.assert_allclose(out[weight_key].numpy()[c], (m / m.norm()).numpy(), atol=1e-6)
    assert not out[weight_key].numpy()[3].any() and not out[bias_key].numpy().any()
    others = set(arrays) - {weight_key, bias_key}
    assert all(np.array_equal(out[k].numpy(), arrays[k].numpy()) for k in others)


BAD = {
    "nan sums": (lambda s, c, n: ({"sums": s * np.nan, "counts": c}, n), "sums: not finite"),
    "negative count": (lambda s, c, n: ({"sums": s, "counts": c - 9}, n), "counts: must be >= 0"),
    "counts do not add up": (lambda s, c, n: ({"sums": s, "counts": c}, n + 1), "add up"),
    "shape": (lambda s, c, n: ({"sums": s[:, :3], "counts": c}, n), "sums: float32 (4, 3)"),
    "dtype": (lambda s, c, n: ({"sums": s.astype(np.float64), "counts": c}, n), "sums: float64"),
    "float counts": (lambda s, c, n: ({"sums": s, "counts": c.astype(np.float32)}, n), "counts:"),
    "extra key": (lambda s, c, n: ({"sums": s, "counts": c, "x": c}, n), "got ['counts', 'sums'"),
    "zero examples": (lambda s, c, n: ({"sums": s, "counts": c * 0}, 0), "num-examples=0"),
    "too many examples": (lambda s, c, n: ({"sums": s, "counts": c * 10**6}, n * 10**6),
                          "exceeds the bound"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_statistics_are_rejected_by_name(case):
    # Prepare: one honest client, one bad
    model = _model("head")
    sums, counts = class_feature_sums(model, _data(8, 2), 4)
    make, reason = BAD[case]
    grid = FakeGrid({1: 0, 2: 1}, {1: _stats_of(model, _data(8, 3)),
                                   2: lambda sent, rnd: make(sums, counts, 8)})  # fmt: skip
    strategy = _strategy(model, limits=Limits(max_num_examples=1000))
    # Execute
    strategy.initialise_head(grid, to_arrayrecord(trainable_state(model)), head_keys(model), 5)
    # Assert
    assert reason in strategy.rounds[0].rejected[2]
    assert strategy.rounds[0].accepted == 1 and strategy.rounds[0].bytes_up > 0


def test_too_few_usable_replies_fail_with_a_clear_message():
    model = _model("head")
    bad = lambda sent, rnd: ({"sums": np.zeros(1, np.float32)}, 3)  # noqa: E731
    grid = FakeGrid({1: 0, 2: 1}, {1: bad, 2: bad})
    with pytest.raises(RuntimeError, match="FedNCM: 0 usable statistics replies"):
        _strategy(model).initialise_head(grid, to_arrayrecord(trainable_state(model)),
                                         head_keys(model), 5)  # fmt: skip


def test_the_client_handler_replies_valid_statistics(monkeypatch):
    # Prepare
    cfg, model, data = parse_run_config({"peft.method": "lora"}), _model("lora"), _data(10, 4)
    arrays = to_arrayrecord(trainable_state(model))
    local = client.Local(cfg, model, data, 0, make_engine(model, precision="fp32"), arrays)
    monkeypatch.setattr(client, "_prepare", lambda msg, ctx: local)
    content = RecordDict({"arrays": to_arrayrecord(trainable_state(model)),
                          "config": ConfigRecord({"server-round": 0})})  # fmt: skip
    msg = Message(content, dst_node_id=1, message_type="train.ncm")
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    # Execute
    reply = client.ncm_statistics(msg, context)
    # Assert
    checked = check_statistics(reply.content, CLASSES, model.num_features, 0)
    assert not isinstance(checked, str), checked
    assert checked[1].tolist() == [4, 3, 3, 0]


def test_ncm_is_refused_under_dp():
    for mode in ("local", "central"):
        with pytest.raises(ConfigError, match=r"peft.head.init='ncm'.*not supported under DP"):
            parse_run_config({"peft.head.init": "ncm", "dp.mode": mode})
