"""Images as uint8 tensors at their source resolution, cached per process.

A Ray worker (or a deployed ClientApp process) loads and partitions a dataset
once; later rounds reuse the cached tensors. Images are kept at the source's size
(capped at the model's, so a larger source is downsampled once, antialiased, here),
in one channel when every image is greyscale: a 32 px CIFAR-100 for a 224 px model
takes 49× less memory than at 224 px. :mod:`fedpeft.data.batches` resizes and
normalises each batch on the training device.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:  # imported when data is read (see fedpeft.data)
    from datasets import Dataset

    from .federated import FederatedImages
    from .settings import DataSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTensors:
    """``images``: uint8 ``N×C×S×S`` (C = 1 or 3, S ≤ the model's size); ``labels``: int64 ``N``.

    ``key`` names where the images came from (data config, seed, size cap, partition),
    for caches of what is computed from them (:mod:`fedpeft.features`); empty: uncached.
    ``class_names``: by class id, where the source names its classes.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    key: str = ""
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def names(self) -> list[str]:
        """The class names by class id; ``"0"`` ... ``"C-1"`` where the source has none."""
        return list(self.class_names) or [str(i) for i in range(self.num_classes)]


def hold_out(data: ImageTensors, fraction: float, seed: int) -> tuple[ImageTensors, ImageTensors]:
    """``data`` split into (train, held out): a seeded ``fraction`` of its images held out.

    At least one image on each side when ``data`` has two or more. The parts keep
    ``data``'s key (with the part and fraction appended) so caches of what is computed
    from them stay valid across messages.
    """
    n = len(data)
    held = min(max(round(n * fraction), 1), n - 1) if n > 1 else 0
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = []
    for name, index in (("train", order[held:]), ("held-out", order[:held])):
        index = index.sort().values
        key = f"{data.key}/{name}@{fraction}" if data.key else ""
        parts.append(ImageTensors(data.images[index], data.labels[index], data.num_classes,
                                  key, data.class_names))  # fmt: skip
    return parts[0], parts[1]


GREY_MODES = ("1", "L")


def stored_size(sizes: list[tuple[int, int]], max_size: int) -> int:
    """Side of the stored square images: the largest source side, capped at ``max_size``."""
    return min(max_size, max((max(wh) for wh in sizes), default=max_size))


def to_uint8(images: list[Image.Image], max_size: int) -> np.ndarray:
    """``N×C×S×S`` uint8 of PIL images: greyscale when all are, S = :func:`stored_size`."""
    grey = all(img.mode in GREY_MODES for img in images)
    mode, channels = ("L", 1) if grey else ("RGB", 3)
    size = stored_size([img.size for img in images], max_size)
    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, img in enumerate(images):
        img = img.convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.uint8)
        out[i] = arr[None] if grey else arr.transpose(2, 0, 1)
    return out


def _pil(image: object) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))


def to_tensors(
    ds: Dataset, max_size: int, num_classes: int, key: str = "", class_names: tuple[str, ...] = ()
) -> ImageTensors:
    """Convert rows with ``image``/``label`` into :class:`ImageTensors` (sides ≤ ``max_size``)."""
    images = to_uint8([_pil(img) for img in ds["image"]], max_size)
    labels = np.asarray(ds["label"], dtype=np.int64)
    return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels), num_classes, key,
                        class_names)  # fmt: skip


def data_key(**parts: object) -> str:
    """A stable name for a set of images (:attr:`ImageTensors.key`)."""
    return json.dumps(parts, sort_keys=True, default=str)


@functools.lru_cache(maxsize=4)
def _federated(cfg: DataSettings, num_partitions: int, seed: int) -> FederatedImages:
    from .federated import federated_images

    log.info("Loading dataset %s:%s for %d partitions", cfg.source, cfg.dataset, num_partitions)
    return federated_images(cfg, num_partitions, seed)


@functools.lru_cache(maxsize=64)
def load_partition(
    cfg: DataSettings, seed: int, img_size: int, partition_id: int, num_partitions: int
) -> ImageTensors:
    """Client ``partition_id``'s training images (cached per process)."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id={partition_id}: must be in [0, {num_partitions})")
    fed = _federated(cfg, num_partitions, seed)
    key = data_key(data=cfg, seed=seed, max_size=img_size, partition=[partition_id, num_partitions])
    return to_tensors(fed.partition(partition_id), img_size, fed.num_classes, key)


@functools.lru_cache(maxsize=4)
def load_test(cfg: DataSettings, seed: int, img_size: int) -> ImageTensors:
    """The held-out central test split (cached per process)."""
    fed = _federated(cfg, 1, seed)
    key = data_key(data=cfg, seed=seed, max_size=img_size, split="test")
    return to_tensors(fed.test, img_size, fed.num_classes, key, tuple(fed.class_names))
