"""Image files for prediction and evaluation: found, read, and what could not be read.

Files are read the way a run reads an image folder (:func:`fedpeft.data.folder.read_image`:
decoded, shrunk to the model's size when larger). A file that is not an image, or an
image that cannot be decoded, is logged with its path and the reason and left out;
the others are still used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ...data.folder import IMAGE_SUFFIXES, read_image

log = logging.getLogger(__name__)

# What PIL raises on a file it cannot decode (UnidentifiedImageError is an OSError;
# truncated data is an OSError or, from some plugins, a SyntaxError or ValueError).
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def files_under(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursive, sorted), hidden files and folders left out."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


def find_files(paths: Iterable[Path]) -> list[Path]:
    """The files named in ``paths`` and every file under a folder named there.

    Raises
    ------
    FileNotFoundError
        If a path does not exist (the error names it).

    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += files_under(path)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


@dataclass
class ReadImages:
    """The images read (``files[i]`` → ``images[i]``) and the files left out, with why."""

    files: list[Path] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    skipped: dict[Path, str] = field(default_factory=dict)


def read_images(files: Iterable[Path], max_size: int) -> ReadImages:
    """Read every image of ``files`` at most ``max_size`` per side; log and skip the rest."""
    out = ReadImages()
    for file in files:
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            why = f"not an image file (suffix {file.suffix or 'none'!r}; read: {IMAGE_SUFFIXES})"
            log.warning("skipping %s: %s", file, why)
            out.skipped[file] = why
            continue
        try:
            image = read_image(file, max_size)
        except UNREADABLE as exc:
            why = f"unreadable image ({type(exc).__name__}: {exc})"
            log.error("skipping %s: %s", file, why)
            out.skipped[file] = why
            continue
        out.files.append(file)
        out.images.append(image)
    return out
