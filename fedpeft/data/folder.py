"""A device's own labelled images: ``<root>/<class>/<image>``, read with PIL.

Labels must mean the same on every device, so class folders are either the
integer class ids (``0/``, ``7/``) or names listed, in class-id order, one per
line in ``<root>/classes.txt``. A device may hold any subset of the classes.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .tensors import ImageTensors, data_key, to_uint8

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _class_ids(root: Path) -> dict[str, int]:
    listing = root / "classes.txt"
    if listing.is_file():
        names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
        return {name: i for i, name in enumerate(names)}
    return {}


def _label(folder: Path, ids: dict[str, int], num_classes: int) -> int:
    if ids:
        if folder.name not in ids:
            raise ValueError(f"data-path: class folder {str(folder)!r} is not in classes.txt")
        label = ids[folder.name]
    elif folder.name.isdigit():
        label = int(folder.name)
    else:
        raise ValueError(
            f"data-path: class folder {str(folder)!r} is not an integer class id; "
            "name folders 0, 1, ... or list the class names in classes.txt"
        )
    if label >= num_classes:
        raise ValueError(
            f"data-path: class folder {str(folder)!r} is class {label}, "
            f"but the run's model has {num_classes} classes"
        )
    return label


def read_image(file: Path, max_size: int) -> Image.Image:
    """One image file, decoded and, when a side is longer, shrunk to ``max_size`` (aspect kept).

    What every image read from a folder goes through (never held at full size);
    :func:`~fedpeft.data.tensors.to_uint8` then makes the stored square.

    Raises
    ------
    OSError
        If the file cannot be read or decoded as an image (PIL's error).

    """
    with Image.open(file) as img:
        img.load()
        if max(img.size) > max_size:
            img = img.resize(_fit(img.size, max_size), Image.Resampling.BICUBIC)
        return img


@functools.lru_cache(maxsize=4)
def load_image_folder(root: str, img_size: int, num_classes: int) -> ImageTensors:
    """All images under ``root`` as :class:`ImageTensors` (cached per process).

    Each image is stored as a ``S×S`` square, S = the largest side found, at most
    ``img_size`` (:func:`~fedpeft.data.tensors.to_uint8`).

    Raises
    ------
    ValueError
        If ``root`` is not a folder, holds no images, or a class folder is unknown.

    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(f"data-path={root!r}: not a folder")
    ids = _class_ids(path)
    images, labels = [], []
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        label = _label(folder, ids, num_classes)
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(read_image(file, img_size))
                labels.append(label)
    if not images:
        raise ValueError(f"data-path={root!r}: no images in <class>/ folders ({IMAGE_SUFFIXES})")
    log.info("Loaded %d images of %d classes from %s", len(images), len(set(labels)), path)
    return ImageTensors(
        torch.from_numpy(to_uint8(images, img_size)),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        num_classes,
        data_key(folder=str(path.resolve()), max_size=img_size, classes=num_classes),
    )


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled so that its longer side is ``max_side`` (aspect kept)."""
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
