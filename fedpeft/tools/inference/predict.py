"""``fedpeft-predict DIR IMAGES... [--out preds.csv] [--top-k K]``: classify image files.

    .venv/bin/fedpeft-predict models/my-run photo.png more_photos/ --out preds.csv

DIR is a model folder written by ``fedpeft-export``; IMAGES are files or folders
(searched recursively). The CSV (stdout without ``--out``) has one row per image read:
its path, the predicted class name and its probability, then the top-k class names
and probabilities. Files that are not images or cannot be read are logged, naming
them, and the rest are still predicted.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path
from typing import TextIO

import torch

from .classify import Classifier, model_arguments, positive
from .images import find_files, read_images

log = logging.getLogger("fedpeft.predict")


def header(k: int) -> list[str]:
    """The CSV columns for the top ``k`` classes."""
    top = [c for i in range(1, k + 1) for c in (f"class_{i}", f"probability_{i}")]
    return ["path", "prediction", "probability", *top]


def rows(files: list[Path], probs: torch.Tensor, names: list[str], k: int) -> list[list[str]]:
    """One CSV row per file: its top ``k`` classes by probability."""
    values, indices = probs.topk(k, dim=1)
    out = []
    for file, vals, idx in zip(files, values.tolist(), indices.tolist(), strict=True):
        top = [v for c, p in zip(idx, vals, strict=True) for v in (names[c], f"{p:.6f}")]
        out.append([str(file), names[idx[0]], f"{vals[0]:.6f}", *top])
    return out


def predict(model_dir: Path, paths: list[Path], top_k: int = 5, device: str = "cpu",
            batch_size: int = 64) -> tuple[list[list[str]], dict[Path, str], int]:  # fmt: skip
    """The CSV rows of every image under ``paths``, the files skipped (with why), and k.

    ``k`` is ``top_k`` capped at the model's number of classes.
    """
    classifier = Classifier.open(model_dir, device)
    read = read_images(find_files(paths), classifier.info.img_size)
    k = min(top_k, classifier.info.num_classes)
    probs = classifier.probabilities(read.images, batch_size)
    return rows(read.files, probs, classifier.info.class_names, k), read.skipped, k


def _write(out: TextIO, k: int, table: list[list[str]]) -> None:
    writer = csv.writer(out)
    writer.writerow(header(k))
    writer.writerows(table)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedpeft-predict", description=__doc__.split("\n")[0])
    model_arguments(p)
    p.add_argument("images", type=Path, nargs="+", help="image files or folders (recursive)")
    p.add_argument("--out", type=Path, help="CSV file to write (default: standard output)")
    p.add_argument("--top-k", type=positive, default=5, help="classes listed per image")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``fedpeft-predict``); 1 when no image could be read."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        table, skipped, k = predict(args.model_dir, args.images, args.top_k, args.device,
                                    args.batch_size)  # fmt: skip
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    if args.out is None:
        _write(sys.stdout, k, table)
    else:
        with args.out.open("w", newline="") as f:
            _write(f, k, table)
        log.info("wrote %d predictions to %s", len(table), args.out)
    if skipped:
        log.warning("%d file(s) skipped: %s", len(skipped), ", ".join(map(str, skipped)))
    if not table:
        log.error("no image could be read")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
