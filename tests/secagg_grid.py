"""A Grid that delivers each message to the real ClientApp's handlers, one Context per node.

Training runs on a tiny random ViT with the run's PEFT method (the head by default):
``client_app.app._prepare`` is replaced by :meth:`AppGrid.prepare`, each round starting
from the built model; every other step of every handler is the real one.
``drop(message_type, node)`` makes a node send no reply to that message, ``tamper(reply)``
may replace a reply; every reply the server receives is kept in :attr:`AppGrid.received`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from flwr.app import Context, Error, Message, RecordDict

import client_app.app as client
from fedpeft import wire
from fedpeft.arrays import to_numpy, trainable_state
from fedpeft.config import parse_run_config
from fedpeft.data.tensors import ImageTensors
from fedpeft.engine import make_engine
from fedpeft.sharing import shared_names, sharing_of
from peft_strategies import get_method
from tests.conftest import tiny_vit

RUN = {"peft.method": "head", "seed": 3, "data.train-size": 64, "train.batch-size": 8}
NUM_CLASSES = 4


class AppGrid:
    """``sizes[i]`` images on node ``i + 1`` (partition ``i``)."""

    def __init__(self, sizes: list[int], run: dict | None = None) -> None:
        self.run = {**RUN, **(run or {})}
        self.cfg = parse_run_config(self.run)
        method = get_method(self.cfg.peft.method)
        self.model = method.apply(tiny_vit(NUM_CLASSES), self.cfg.peft.params)
        self.engine = make_engine(self.model, precision="fp32")
        # every trainable tensor as built (FedSA's B too: each round starts from it)
        self._start = {k: v.clone() for k, v in trainable_state(self.model).items()}
        shared = shared_names(self.model, sharing_of(self.cfg.peft))
        self._initial = to_numpy({k: v for k, v in self._start.items() if k in shared})
        gen = torch.Generator().manual_seed(0)
        self.data = {}
        self.contexts = {}
        for i, size in enumerate(sizes):
            images = torch.randint(0, 255, (size, 3, 32, 32), dtype=torch.uint8, generator=gen)
            labels = torch.randint(0, NUM_CLASSES, (size,), generator=gen)
            self.data[i + 1] = ImageTensors(images, labels, NUM_CLASSES)
            node = {"partition-id": i, "num-partitions": len(sizes)}
            self.contexts[i + 1] = Context(run_id=1, node_id=i + 1, node_config=node,
                                           state=RecordDict(), run_config=self.run)  # fmt: skip
        self.drop: Callable[[str, int], bool] = lambda message_type, node: False
        self.tamper: Callable[[Message], Message] = lambda reply: reply
        self.received: list[Message] = []
        self._next_id = 0

    def configure(self, run: dict) -> None:
        """Run ``run`` (the server's and every node's run config)."""
        self.run = run
        self.cfg = parse_run_config(run)
        for context in self.contexts.values():
            context.run_config = run

    def initial(self) -> dict[str, np.ndarray]:
        """The head as the seeded build left it (the server's initial arrays)."""
        return {k: v.copy() for k, v in self._initial.items()}

    def prepare(self, msg: Message, context: Context) -> client.Local:
        """``_prepare`` on the tiny model: load what was received, this node's images."""
        received = wire.received(msg.content, self.cfg.comm.codec("downlink"))
        self.model.load_state_dict(self._start, strict=False)
        self.model.load_state_dict(
            {k: torch.from_numpy(v.numpy().copy()) for k, v in received.items()}, strict=False
        )
        node = context.node_id
        return client.Local(self.cfg, self.model, self.data[node], node - 1, self.engine,
                            received)  # fmt: skip

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        out = []
        for msg in messages:
            self._next_id += 1
            msg.metadata.__dict__["_message_id"] = f"m{self._next_id}"  # as a Grid's push does
            node = msg.metadata.dst_node_id
            if self.drop(msg.metadata.message_type, node):
                continue
            try:
                reply = client.app(msg, self.contexts[node])
            except Exception as exc:
                reply = Message(Error(code=0, reason=repr(exc)), reply_to=msg)
            out.append(self.tamper(reply))
        self.received += out
        return out
