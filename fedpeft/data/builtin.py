"""Offline built-in datasets (``data.source = "builtin"``), registered by name.

Each loader takes the run's ``data.*`` config and the seed and returns a ``DatasetDict``
with ``train`` and ``test``; ``datasets`` is imported when one is called. Adding a
built-in dataset is one function registered in :data:`BUILTIN_DATASETS`.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..registry import Registry

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from .settings import DataSettings

log = logging.getLogger(__name__)

FASHION_DIRS = (
    os.environ.get("FEDPEFT_FASHION_MNIST_DIR", ""),
    "/usr/share/datasets/fashion-mnist",  # Debian package dataset-fashion-mnist
)
FASHION_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


BUILTIN_DATASETS: Registry[Callable[[DataSettings, int], DatasetDict]] = Registry(
    "built-in dataset"
)


def _to_dataset(images: np.ndarray, labels: np.ndarray, names: list[str]) -> Dataset:
    from datasets import ClassLabel, Dataset, Features, Image

    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    return Dataset.from_dict(
        {"image": list(images), "label": labels.astype(np.int64).tolist()}, features=features
    )


def _subsample(n_total: int, size: int, seed: int) -> np.ndarray:
    if size <= 0 or size >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=size, replace=False))


@BUILTIN_DATASETS.register("fashion-mnist")
def fashion_mnist(cfg: DataSettings, seed: int) -> DatasetDict:
    """Fashion-MNIST from the Debian package's IDX files, else from the hub."""
    train_size, test_size = cfg.train_size, cfg.test_size
    for folder in filter(None, FASHION_DIRS):
        root = Path(folder)
        if (root / "train-images-idx3-ubyte.gz").exists():
            log.info("Fashion-MNIST: reading IDX files from %s", root)
            splits = {}
            for split, stem, size, salt in (
                ("train", "train", train_size, 0),
                ("test", "t10k", test_size, 1),
            ):
                x = _read_idx(root / f"{stem}-images-idx3-ubyte.gz")
                y = _read_idx(root / f"{stem}-labels-idx1-ubyte.gz")
                idx = _subsample(len(y), size, seed + salt)
                splits[split] = _to_dataset(x[idx], y[idx], FASHION_CLASSES)
            from datasets import DatasetDict

            return DatasetDict(splits)
    log.info("Fashion-MNIST: Debian files absent; loading %s from the hub", FASHION_HUB_ID)
    from datasets import load_dataset

    return load_dataset(FASHION_HUB_ID)


@BUILTIN_DATASETS.register("digits")
def digits(cfg: DataSettings, seed: int) -> DatasetDict:
    """scikit-learn's 1,797 8×8 digits, split 80/20 (seeded); the sizes apply later."""
    from datasets import DatasetDict
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(0.8 * len(images))
    names = [str(i) for i in range(10)]
    return DatasetDict(
        {
            "train": _to_dataset(images[order[:cut]], bunch.target[order[:cut]], names),
            "test": _to_dataset(images[order[cut:]], bunch.target[order[cut:]], names),
        }
    )


@BUILTIN_DATASETS.register("elpv")
def elpv(cfg: DataSettings, seed: int) -> DatasetDict:
    """ELPV solar cells (PyPI ``elpv-dataset``), labelled for ``data.elpv.task``."""
    from .elpv import load_elpv

    return load_elpv(cfg.elpv__task, seed)


__all__ = ["BUILTIN_DATASETS", "digits", "elpv", "fashion_mnist"]
