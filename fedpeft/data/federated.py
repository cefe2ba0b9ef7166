"""One federated view of any source: partitions for clients, a test split for the server.

Hub ids, image folders and parquet files go through flwr-datasets'
``FederatedDataset``; the offline built-ins are partitioned by the same
flwr-datasets partitioners directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict
from flwr_datasets import FederatedDataset
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    PathologicalPartitioner,
)
from flwr_datasets.partitioner.partitioner import Partitioner

from ..config import DataConfig
from . import builtin

log = logging.getLogger(__name__)

IMAGE_CANDIDATES = ("image", "img", "pixel_values", "images")
LABEL_CANDIDATES = ("label", "labels", "fine_label", "class", "target")


def make_partitioner(cfg: DataConfig, num_partitions: int, seed: int) -> Partitioner:
    """The flwr-datasets partitioner for ``data.partitioner`` (by the ``label`` column)."""
    if cfg.partitioner == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if cfg.partitioner == "dirichlet":
        # Per-class Dirichlet(alpha) proportions, resampled until every client
        # holds at least min-partition-size samples (the paper's procedure).
        return DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=cfg.dirichlet__alpha,
            min_partition_size=cfg.dirichlet__min_partition_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    # "shard": each client holds k classes.
    return PathologicalPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        num_classes_per_partition=cfg.shard__classes_per_client,
        class_assignment_mode="deterministic",
        shuffle=True,
        seed=seed,
    )


def _pick(columns: list[str], wanted: str, candidates: tuple[str, ...], key: str) -> str:
    if wanted:
        if wanted not in columns:
            raise ValueError(f"{key}={wanted!r}: no such column; columns are {columns}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(f"{key}: cannot guess the column among {columns}; set {key}")


def _subsample(ds: Dataset, size: int, seed: int) -> Dataset:
    if size <= 0 or size >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(size))


def make_preprocessor(cfg: DataConfig, seed: int) -> Any:
    """Rename to ``image``/``label``, carve a test split if absent, subsample."""

    def preprocess(dd: DatasetDict) -> DatasetDict:
        if "train" not in dd:
            raise ValueError(f"data.dataset={cfg.dataset!r}: no 'train' split in {list(dd)}")
        columns = dd["train"].column_names
        image = _pick(columns, cfg.image_column, IMAGE_CANDIDATES, "data.image-column")
        label = _pick(columns, cfg.label_column, LABEL_CANDIDATES, "data.label-column")
        dd = DatasetDict(
            {
                split: ds.select_columns([image, label]).rename_columns(
                    {image: "image", label: "label"} if image != "image" or label != "label" else {}
                )
                for split, ds in dd.items()
            }
        )
        if cfg.test_split in dd:
            train, test = dd["train"], dd[cfg.test_split]
        else:
            n_test = cfg.test_size or max(1, len(dd["train"]) // 5)
            log.info("No %r split: holding out %d training images", cfg.test_split, n_test)
            parts = dd["train"].train_test_split(test_size=n_test, seed=seed)
            train, test = parts["train"], parts["test"]
        return DatasetDict(
            {
                "train": _subsample(train, cfg.train_size, seed),
                "test": _subsample(test, cfg.test_size, seed + 1),
            }
        )

    return preprocess


def _num_classes(dd: DatasetDict) -> int:
    feature = dd["train"].features["label"]
    if isinstance(feature, ClassLabel):
        return int(feature.num_classes)
    return int(max(max(dd["train"]["label"]), max(dd["test"]["label"]))) + 1


@dataclass
class FederatedImages:
    """Partitioned training images plus the held-out central test split."""

    partitioner: Partitioner
    test: Dataset
    num_classes: int

    def partition(self, partition_id: int) -> Dataset:
        """The rows of client ``partition_id``."""
        return self.partitioner.load_partition(partition_id)


def federated_images(cfg: DataConfig, num_partitions: int, seed: int) -> FederatedImages:
    """Load ``data.*`` once and partition it into ``num_partitions`` clients."""
    partitioner = make_partitioner(cfg, num_partitions, seed)
    preprocess = make_preprocessor(cfg, seed)
    if cfg.source == "builtin":
        if cfg.dataset == "digits":
            raw = builtin.digits(seed)
        else:
            raw = builtin.fashion_mnist(cfg.train_size, cfg.test_size, seed)
        dd = preprocess(raw)
        partitioner.dataset = dd["train"]
        return FederatedImages(partitioner, dd["test"], _num_classes(dd))
    kwargs: dict[str, Any] = {}
    name = cfg.dataset
    if cfg.source == "folder":
        name, kwargs = "imagefolder", {"data_dir": cfg.dataset}
    elif cfg.source == "parquet":
        name, kwargs = "parquet", {"data_files": cfg.dataset}
    fds = FederatedDataset(
        dataset=name,
        partitioners={"train": partitioner},
        preprocessor=preprocess,
        shuffle=True,
        seed=seed,
        **kwargs,
    )
    test = fds.load_split("test")
    dd = DatasetDict({"train": fds.partitioners["train"].dataset, "test": test})
    return FederatedImages(fds.partitioners["train"], test, _num_classes(dd))
