"""One federated view of any source: partitions for clients, a test split for the server.

The source (:data:`fedpeft.data.sources.SOURCES`) loads the images; the partitioner
(:data:`fedpeft.data.partitioners.PARTITIONERS`) splits the training pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from datasets import ClassLabel, Dataset, DatasetDict
from flwr_datasets.partitioner.partitioner import Partitioner

from .partitioners import make_partitioner
from .sources import SOURCES

if TYPE_CHECKING:
    from .settings import DataSettings

log = logging.getLogger(__name__)

IMAGE_CANDIDATES = ("image", "img", "pixel_values", "images")
LABEL_CANDIDATES = ("label", "labels", "fine_label", "class", "target")


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


def make_preprocessor(cfg: DataSettings, seed: int) -> Any:
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


def _class_names(dd: DatasetDict, num_classes: int) -> list[str]:
    """The class names of the label feature (a ``ClassLabel``: a folder's names, ...), else [].

    The test split's feature, else the training split's; names that do not cover exactly
    ``num_classes`` classes are not used.
    """
    for split in ("test", "train"):
        feature = dd[split].features["label"]
        if isinstance(feature, ClassLabel) and len(feature.names) == num_classes:
            return [str(n) for n in feature.names]
    return []


@dataclass
class FederatedImages:
    """Partitioned training images plus the held-out central test split."""

    partitioner: Partitioner
    test: Dataset
    num_classes: int
    class_names: list[str] = field(default_factory=list)  # by class id; empty: unknown

    def partition(self, partition_id: int) -> Dataset:
        """The rows of client ``partition_id``."""
        return self.partitioner.load_partition(partition_id)


def federated_images(cfg: DataSettings, num_partitions: int, seed: int) -> FederatedImages:
    """Load ``data.*`` once and partition it into ``num_partitions`` clients."""
    partitioner = make_partitioner(cfg, num_partitions, seed)
    preprocess = make_preprocessor(cfg, seed)
    load = SOURCES.get(cfg.source, "data.source")
    partitioner, test = load(cfg, partitioner, preprocess, seed)
    dd = DatasetDict({"train": partitioner.dataset, "test": test})
    num_classes = _num_classes(dd)
    return FederatedImages(partitioner, test, num_classes, _class_names(dd, num_classes))
