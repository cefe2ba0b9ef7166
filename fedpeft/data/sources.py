"""``data.source``: where a run's images come from, one registered loader per source.

A loader takes the data config, the partitioner, the preprocessor (rename to
``image``/``label``, carve a test split, subsample) and the seed, and returns the
partitioner holding the training pool plus the central test split. Hub ids, image
folders and parquet files go through flwr-datasets' ``FederatedDataset``; the
offline built-ins (:data:`fedpeft.data.builtin.BUILTIN_DATASETS`) are partitioned
by the same partitioner directly. Adding a source is one registered function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..registry import Registry

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from flwr_datasets.partitioner.partitioner import Partitioner

    from .settings import DataSettings

Preprocess = Callable[["DatasetDict"], "DatasetDict"]
Loaded = tuple["Partitioner", "Dataset"]
Source = Callable[["DataSettings", "Partitioner", Preprocess, int], Loaded]
SOURCES: Registry[Source] = Registry("data source")


@SOURCES.register("builtin")
def builtin(
    cfg: DataSettings, partitioner: Partitioner, preprocess: Preprocess, seed: int
) -> Loaded:
    """An offline built-in dataset by name (``data.dataset``)."""
    from .builtin import BUILTIN_DATASETS

    load = BUILTIN_DATASETS.get(cfg.dataset, "data.dataset")
    dd = preprocess(load(cfg, seed))
    partitioner.dataset = dd["train"]
    return partitioner, dd["test"]


def _federated(dataset: str, partitioner: Partitioner, preprocess: Preprocess, seed: int,
               **kwargs: Any) -> Loaded:  # fmt: skip
    from flwr_datasets import FederatedDataset

    fds = FederatedDataset(
        dataset=dataset,
        partitioners={"train": partitioner},
        preprocessor=preprocess,
        shuffle=True,
        seed=seed,
        **kwargs,
    )
    test = fds.load_split("test")
    return fds.partitioners["train"], test


@SOURCES.register("hub")
def hub(cfg: DataSettings, partitioner: Partitioner, preprocess: Preprocess, seed: int) -> Loaded:
    """A Hugging Face dataset id (``data.dataset``), downloaded by ``datasets``."""
    return _federated(cfg.dataset, partitioner, preprocess, seed)


@SOURCES.register("folder")
def folder(
    cfg: DataSettings, partitioner: Partitioner, preprocess: Preprocess, seed: int
) -> Loaded:
    """An image folder (``data.dataset`` = its path; one sub-folder per class)."""
    return _federated("imagefolder", partitioner, preprocess, seed, data_dir=cfg.dataset)


@SOURCES.register("parquet")
def parquet(
    cfg: DataSettings, partitioner: Partitioner, preprocess: Preprocess, seed: int
) -> Loaded:
    """A parquet file or glob (``data.dataset``)."""
    return _federated("parquet", partitioner, preprocess, seed, data_files=cfg.dataset)
