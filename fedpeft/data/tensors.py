"""Images as uint8 tensors at the model's resolution, cached per process.

A Ray worker (or a deployed ClientApp process) loads and partitions a dataset
once; later rounds reuse the cached tensors. Normalisation happens per batch
(:func:`normalize`) with the backbone's mean and std.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:  # imported when data is read (see fedpeft.data)
    from datasets import Dataset

    from ..config import DataConfig
    from .federated import FederatedImages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTensors:
    """``images``: uint8 ``N×3×S×S``; ``labels``: int64 ``N``."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _to_rgb_uint8(image: object, size: int) -> np.ndarray:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    pil = pil.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(pil, dtype=np.uint8).transpose(2, 0, 1)


def to_tensors(ds: Dataset, size: int, num_classes: int) -> ImageTensors:
    """Convert rows with ``image``/``label`` into :class:`ImageTensors`."""
    images = (
        np.stack([_to_rgb_uint8(img, size) for img in ds["image"]])
        if len(ds)
        else (np.zeros((0, 3, size, size), dtype=np.uint8))
    )
    labels = np.asarray(ds["label"], dtype=np.int64)
    return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels), num_classes)


def normalize(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``B×3×S×S`` → float, scaled to [0, 1] and standardised."""
    return (batch.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


@functools.lru_cache(maxsize=4)
def _federated(cfg: DataConfig, num_partitions: int, seed: int) -> FederatedImages:
    from .federated import federated_images

    log.info("Loading dataset %s:%s for %d partitions", cfg.source, cfg.dataset, num_partitions)
    return federated_images(cfg, num_partitions, seed)


@functools.lru_cache(maxsize=64)
def load_partition(
    cfg: DataConfig, seed: int, img_size: int, partition_id: int, num_partitions: int
) -> ImageTensors:
    """Client ``partition_id``'s training images (cached per process)."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id={partition_id}: must be in [0, {num_partitions})")
    fed = _federated(cfg, num_partitions, seed)
    return to_tensors(fed.partition(partition_id), img_size, fed.num_classes)


@functools.lru_cache(maxsize=4)
def load_test(cfg: DataConfig, seed: int, img_size: int) -> ImageTensors:
    """The held-out central test split (cached per process)."""
    fed = _federated(cfg, 1, seed)
    return to_tensors(fed.test, img_size, fed.num_classes)
