"""A node's data, model config, client number and LoRA rank, from its ``--node-config``.

The keys are parsed by :func:`fedpeft.config.parse_node_config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord

from fedpeft.config import ModelConfig, RunConfig, parse_node_config
from fedpeft.data import ImageTensors, load_partition
from fedpeft.data.diskcache import cached, folder_fingerprint
from fedpeft.data.folder import load_image_folder
from fedpeft.data.tensors import hold_out
from fedpeft.hetlora import node_rank


@dataclass(frozen=True)
class NodeSetup:
    """The node's training data, its model config, a stable client number, the images it
    holds out for its own evaluation (``data.local-test-fraction``; ``None``: none) and
    the LoRA rank it trains (HetLoRA; ``None``: the run's ``peft.lora.r``).
    """  # noqa: D205

    data: ImageTensors
    model: ModelConfig
    client_id: int
    local_test: ImageTensors | None = None
    rank: int | None = None


def _held_out(cfg: RunConfig, data: ImageTensors, model: ModelConfig, client_id: int,
              rank: int | None) -> NodeSetup:  # fmt: skip
    fraction = cfg.data.local_test_fraction
    if not fraction:
        return NodeSetup(data, model, client_id, rank=rank)
    train, test = hold_out(data, fraction, cfg.seed * 1_000_003 + client_id)
    return NodeSetup(train, model, client_id, test, rank)


def lora_rank(cfg: RunConfig, node_config: Mapping[str, object]) -> int | None:
    """The LoRA rank this node trains and announces (HetLoRA), ``None``: ``peft.lora.r``."""
    return node_rank(cfg.peft, parse_node_config(node_config, files=False))


def head_classes(arrays: ArrayRecord) -> int:
    """Number of classes of the run's model, from the received head weight."""
    for key in ("head.weight", *sorted(k for k in arrays if k.endswith("head.weight"))):
        if key in arrays:
            return int(arrays[key].shape[0])
    raise ValueError(f"no head weight among the received arrays {sorted(arrays)[:5]}...")


def node_setup(cfg: RunConfig, node_config: Mapping[str, object], arrays: ArrayRecord,
               node_id: int) -> NodeSetup:  # fmt: skip
    """Data, model config and client number for this node.

    The data is cached per process and on disk (:mod:`fedpeft.data.diskcache`), so a
    deployed node decodes its images once, not once per message.
    """
    node = parse_node_config(node_config)
    rank = node_rank(cfg.peft, node)
    model = cfg.model
    if node.weights_path is not None:
        model = dataclasses.replace(cfg.model, weights=node.weights_path)
    size = model.img_size
    if node.data_path is not None:
        root, classes = node.data_path, head_classes(arrays)
        key = {"folder": str(Path(root).expanduser().resolve()), "size": size,
               "classes": classes, "files": folder_fingerprint(root)}  # fmt: skip
        data = cached(key, lambda: load_image_folder(root, size, classes))
        return _held_out(cfg, data, model, node_id % 1_000_003, rank)
    pid, n = int(node.partition_id), int(node.num_partitions)  # type: ignore[arg-type]
    key = {
        "data": dataclasses.asdict(cfg.data),
        "seed": cfg.seed,
        "size": size,
        "partition": [pid, n],
    }
    data = cached(key, lambda: load_partition(cfg.data, cfg.seed, size, pid, n))
    return _held_out(cfg, data, model, pid, rank)
