"""The client trains with the learning rate the server sends, not its own config's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

import client_app.app as client
from fedpeft.arrays import to_arrayrecord, trainable_state
from fedpeft.config import parse_run_config
from fedpeft.data.tensors import ImageTensors
from fedpeft.engine import make_engine
from fedpeft.training import client_seed, train_local
from peft_strategies import get_method
from tests.conftest import tiny_vit


def _setup():
    cfg = parse_run_config({"peft.method": "head", "seed": 3})  # peft.head.lr = 0.05
    model = get_method("head").apply(tiny_vit(4), cfg.peft.params)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8, generator=generator)
    data = ImageTensors(images, torch.arange(16) % 4, 4)
    return cfg, model, data


def _train_message(arrays, config: dict) -> Message:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})
    return Message(content, dst_node_id=1, message_type="train")


def test_reply_is_trained_with_the_sent_lr(monkeypatch):
    # Prepare: the server sends lr 0.2; the run config says 0.05
    cfg, model, data = _setup()
    start = {k: v.clone() for k, v in trainable_state(model).items()}
    engine = make_engine(model, precision=cfg.train.precision)
    local = client.Local(cfg, model, data, 0, engine, to_arrayrecord(start))
    monkeypatch.setattr(client, "_prepare", lambda msg, ctx: local)
    msg = _train_message(to_arrayrecord(start), {"server-round": 1, "lr": 0.2})
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    # Execute
    reply = client.train(msg, context)
    # Assert: equal to local training at 0.2, not at the configured 0.05
    got = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    expected = {}
    for lr in (0.2, cfg.lr):
        model.load_state_dict(start, strict=False)
        train_local(model, data, cfg.train, lr, client_seed(cfg.seed, 1, 0))
        expected[lr] = {k: v.numpy().copy() for k, v in trainable_state(model).items()}
    for key, value in got.items():
        np.testing.assert_array_equal(value, expected[0.2][key])
    assert any(not np.array_equal(got[k], expected[cfg.lr][k]) for k in got)


@pytest.mark.parametrize("lr", [None, 0, -0.1, math.nan, math.inf, True, "0.1"])
def test_a_missing_or_bad_sent_lr_fails_naming_it(lr):
    config = ConfigRecord({"server-round": 1} if lr is None else {"server-round": 1, "lr": lr})
    with pytest.raises(ValueError, match=r"train config lr=.*finite lr > 0"):
        client.sent_lr(config)
