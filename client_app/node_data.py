"""What a SuperNode's ``--node-config`` selects: its data and its backbone weights file.

Keys (anything else is refused, naming the key):

* ``partition-id`` + ``num-partitions``: a partition of the run's ``data.*`` dataset
* ``data-path``: the device's own image folder (see :mod:`fedpeft.data.folder`)
* ``weights-path`` (optional): the backbone weights as a local file, instead of
  the run's ``model.weights`` (devices have no hub access). It must hold the same
  backbone the server uses, e.g. the converted ViT-S/14 from ``$FEDPEFT_CACHE``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord

from fedpeft.config import ModelConfig, RunConfig
from fedpeft.data import ImageTensors, load_partition
from fedpeft.data.diskcache import cached, folder_fingerprint
from fedpeft.data.folder import load_image_folder

KEYS = ("partition-id", "num-partitions", "data-path", "weights-path")


@dataclass(frozen=True)
class NodeSetup:
    """The node's training data, its model config and a stable client number."""

    data: ImageTensors
    model: ModelConfig
    client_id: int


def _int(config: Mapping[str, object], key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"node-config {key}={value!r}: expected an integer")
    return value


def head_classes(arrays: ArrayRecord) -> int:
    """Number of classes of the run's model, from the received head weight."""
    for key in ("head.weight", *sorted(k for k in arrays if k.endswith("head.weight"))):
        if key in arrays:
            return int(arrays[key].shape[0])
    raise ValueError(f"no head weight among the received arrays {sorted(arrays)[:5]}...")


def check_node_config(config: Mapping[str, object], files: bool = True) -> None:
    """Refuse unknown keys, missing or conflicting data choices and (``files``) missing files.

    Raises
    ------
    ValueError
        Naming the bad key or value.

    """
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown node-config key(s) {unknown}; valid keys: {list(KEYS)}")
    partitioned = "partition-id" in config or "num-partitions" in config
    if partitioned and "data-path" in config:
        raise ValueError("node-config: set either data-path or partition-id/num-partitions")
    if "data-path" not in config:
        if not ("partition-id" in config and "num-partitions" in config):
            raise ValueError(
                f"node-config {dict(config)}: set partition-id and num-partitions, or data-path"
            )
        pid, n = _int(config, "partition-id"), _int(config, "num-partitions")
        if not 0 <= pid < n:
            raise ValueError(f"node-config partition-id={pid}: must be in [0, {n})")
    weights = config.get("weights-path")
    if files and weights is not None and not Path(str(weights)).expanduser().is_file():
        raise ValueError(f"node-config weights-path={weights!r}: no such file")


def node_setup(cfg: RunConfig, node_config: Mapping[str, object], arrays: ArrayRecord,
               node_id: int) -> NodeSetup:  # fmt: skip
    """Data, model config and client number for this node.

    The data is cached per process and on disk (:mod:`fedpeft.data.diskcache`), so a
    deployed node decodes its images once, not once per message.
    """
    check_node_config(node_config)
    model = cfg.model
    if "weights-path" in node_config:
        path = str(Path(str(node_config["weights-path"])).expanduser())
        model = dataclasses.replace(cfg.model, weights=path)
    size = model.img_size
    if "data-path" in node_config:
        root, classes = str(node_config["data-path"]), head_classes(arrays)
        key = {"folder": str(Path(root).expanduser().resolve()), "size": size,
               "classes": classes, "files": folder_fingerprint(root)}  # fmt: skip
        data = cached(key, lambda: load_image_folder(root, size, classes))
        return NodeSetup(data, model, node_id % 1_000_003)
    pid, n = _int(node_config, "partition-id"), _int(node_config, "num-partitions")
    key = {
        "data": dataclasses.asdict(cfg.data),
        "seed": cfg.seed,
        "size": size,
        "partition": [pid, n],
    }
    data = cached(key, lambda: load_partition(cfg.data, cfg.seed, size, pid, n))
    return NodeSetup(data, model, pid)
