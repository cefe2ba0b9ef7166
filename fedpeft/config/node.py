"""What a SuperNode's ``--node-config`` may set: its data and its backbone weights file.

Keys (anything else is refused, naming the key):

* ``partition-id`` + ``num-partitions``: a partition of the run's ``data.*`` dataset
* ``data-path``: the device's own image folder (see :mod:`fedpeft.data.folder`)
* ``weights-path`` (optional): the backbone weights as a local file, instead of
  the run's ``model.weights`` (devices have no hub access). It must hold the same
  backbone the server uses, e.g. the converted ViT-S/14 from ``$FEDPEFT_CACHE``.
* ``lora-rank`` (optional): with ``peft.method = "lora"``, the LoRA rank this device
  trains, in [1, ``peft.lora.r``] (HetLoRA, :mod:`fedpeft.hetlora`); other methods
  ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.common.config import parse_config_args

from ..protocol import LORA_RANK, NUM_PARTITIONS, PARTITION_ID, is_int

KEYS = (PARTITION_ID, NUM_PARTITIONS, "data-path", "weights-path", LORA_RANK)


@dataclass(frozen=True)
class NodeConfig:
    """A node's parsed ``--node-config``: a partition or a folder, maybe a weights file and a
    LoRA rank.
    """  # noqa: D205

    partition_id: int | None = None
    num_partitions: int | None = None
    data_path: str | None = None
    weights_path: str | None = None
    lora_rank: int | None = None


def _int(config: Mapping[str, object], key: str) -> int:
    value = config[key]
    if not is_int(value):
        raise ValueError(f"node-config {key}={value!r}: expected an integer")
    return value


def parse_node_config(config: Mapping[str, object], files: bool = True) -> NodeConfig:
    """Refuse unknown keys, missing or conflicting data choices and (``files``) missing files.

    Raises
    ------
    ValueError
        Naming the bad key or value.

    """
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown node-config key(s) {unknown}; valid keys: {list(KEYS)}")
    partitioned = PARTITION_ID in config or NUM_PARTITIONS in config
    if partitioned and "data-path" in config:
        raise ValueError("node-config: set either data-path or partition-id/num-partitions")
    pid = n = None
    if "data-path" not in config:
        if not (PARTITION_ID in config and NUM_PARTITIONS in config):
            raise ValueError(
                f"node-config {dict(config)}: set partition-id and num-partitions, or data-path"
            )
        pid, n = _int(config, PARTITION_ID), _int(config, NUM_PARTITIONS)
        if not 0 <= pid < n:
            raise ValueError(f"node-config partition-id={pid}: must be in [0, {n})")
    weights = config.get("weights-path")
    if files and weights is not None and not Path(str(weights)).expanduser().is_file():
        raise ValueError(f"node-config weights-path={weights!r}: no such file")
    data_path = config.get("data-path")
    rank = _int(config, LORA_RANK) if LORA_RANK in config else None
    if rank is not None and rank < 1:
        raise ValueError(f"node-config lora-rank={rank}: must be >= 1")
    return NodeConfig(
        partition_id=pid,
        num_partitions=n,
        data_path=None if data_path is None else str(data_path),
        weights_path=None if weights is None else str(Path(str(weights)).expanduser()),
        lora_rank=rank,
    )


def node_config_arg(text: str) -> dict[str, Any]:
    """A ``--node-config`` string (``"partition-id=0 num-partitions=2"``) as a flat dict."""
    return dict(parse_config_args([text]))
