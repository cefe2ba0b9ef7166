"""The ClientApp with compression: decodes the downlink, replies the encoded update, keeps
the error-feedback residual in Context.state between rounds.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

import client_app.app as client
from fedpeft import wire
from fedpeft.arrays import to_numpy, trainable_state
from fedpeft.config import parse_run_config
from fedpeft.data.tensors import ImageTensors
from fedpeft.engine import make_engine
from fedpeft.training import client_seed, train_local
from peft_strategies import get_method
from tests.conftest import tiny_vit


def test_the_reply_is_the_int8_update_and_its_residual_is_kept(monkeypatch):
    # Prepare: an fp16 downlink, an int8 uplink with error feedback (the default for int8)
    run = {"peft.method": "head", "seed": 3, "comm.uplink": "int8", "comm.downlink": "fp16"}
    cfg = parse_run_config(run)
    model = get_method("head").apply(tiny_vit(4), cfg.peft.params)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8, generator=generator)
    data = ImageTensors(images, torch.arange(16) % 4, 4)
    start = to_numpy({k: v.clone() for k, v in trainable_state(model).items()})
    config = ConfigRecord({"server-round": 1, "lr": 0.2})
    content = RecordDict({"arrays": wire.encode(start, cfg.comm.codec("downlink")),
                          "config": config})  # fmt: skip
    content["config"][wire.DOWNLINK_KEY] = "fp16"
    received = wire.received(content, cfg.comm.codec("downlink"))
    local = client.Local(cfg, model, data, 0, make_engine(model, precision="fp32"), received)

    def prepare(msg, ctx):
        model.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in received.items()},
                              strict=False)  # fmt: skip
        return local

    monkeypatch.setattr(client, "_prepare", prepare)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})

    # Execute: two rounds from the same received model
    replies = [client.train(Message(content, dst_node_id=1, message_type="train"), context)
               for _ in range(2)]  # fmt: skip

    # Assert: the reply names int8 and carries the update; the residual is what int8 lost
    codec = cfg.comm.codec("uplink")
    base = {k: v.numpy() for k, v in received.items()}
    model.load_state_dict({k: torch.from_numpy(v) for k, v in base.items()}, strict=False)
    engine = make_engine(model, precision="fp32")
    train_local(model, data, cfg.train, 0.2, client_seed(cfg.seed, 1, 0), engine)
    true = {k: v - base[k] for k, v in to_numpy(trainable_state(model)).items()}
    first = replies[0].content
    assert wire.announced(first) == "int8"
    assert first[wire.COMM]["carried-as"] == "int8 values and float32 absmax scales"
    got = wire.decode(first["arrays"], {k: v.shape for k, v in true.items()}, codec)
    assert not isinstance(got, str)
    for key, value in true.items():
        np.testing.assert_allclose(got[key], value, atol=float(np.abs(value).max()) / 254 + 1e-7)
    # round 2 trains the same update again and adds round 1's residual before encoding
    second = wire.decode(replies[1].content["arrays"], {k: v.shape for k, v in true.items()},
                         codec)  # fmt: skip
    residual = context.state.array_records[wire.RESIDUAL]
    for key, value in true.items():
        np.testing.assert_allclose(got[key] + second[key] + residual[key].numpy(), 2 * value,
                                   atol=1e-6)  # fmt: skip
