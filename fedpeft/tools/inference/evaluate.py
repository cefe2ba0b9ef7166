"""``fedpeft-evaluate DIR --data FOLDER``: accuracy of an exported model on labelled images.

    .venv/bin/fedpeft-evaluate models/my-run --data holdout/ --confusion confusion.png

FOLDER holds one sub-folder per class, named by the model's class name (a ``/`` in a
name written as ``_``, e.g. ``T-shirt_top``) or its class id, with that class's images
inside (searched recursively). Prints the accuracy and each class's accuracy and
writes the confusion matrix as a PNG. A folder without class folders, or with a class
folder the model does not know, is an error naming it; files that are not images or
cannot be read are logged and left out.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .classify import Classifier, model_arguments
from .images import files_under, read_images

log = logging.getLogger("fedpeft.evaluate")


def folder_names(class_names: list[str]) -> dict[str, int]:
    """Class folder name → class id: each name, the name with ``/`` as ``_``, the id."""
    out = {str(i): i for i in range(len(class_names))}
    out.update({name.replace("/", "_"): i for i, name in enumerate(class_names)})
    out.update({name: i for i, name in enumerate(class_names)})  # a name wins over an id
    return out


def labelled_files(folder: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    """Every file under ``folder``'s class folders, with its class id.

    Raises
    ------
    ValueError
        If ``folder`` is not a folder, has no class folders, or has a class folder that
        is not among ``class_names``; the message names it and the valid names.

    """
    if not folder.is_dir():
        raise ValueError(f"--data {folder}: not a folder")
    ids = folder_names(class_names)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"--data {folder}: no class folders; expected <class name>/<images> "
                         f"with class names among {class_names}")  # fmt: skip
    unknown = [p.name for p in classes if p.name not in ids]
    if unknown:
        raise ValueError(
            f"--data {folder}: class folder(s) {unknown} are not among the "
            f"model's classes {class_names} (or their ids 0..{len(class_names) - 1})"
        )
    files, labels = [], []
    for path in classes:
        found = files_under(path)
        files += found
        labels += [ids[path.name]] * len(found)
    return files, labels


@dataclass
class Evaluation:
    """Accuracy overall and per class (classes with images), and the confusion matrix."""

    accuracy: float
    num_images: int
    per_class: dict[str, tuple[float, int]]  # class name → (accuracy, images)
    confusion: np.ndarray  # C×C counts: row = true class, column = predicted
    class_names: list[str]
    skipped: dict[Path, str]


def evaluate_folder(model_dir: Path, folder: Path, device: str = "cpu",
                    batch_size: int = 64) -> Evaluation:  # fmt: skip
    """Evaluate the model exported to ``model_dir`` on ``folder`` (see the module doc)."""
    classifier = Classifier.open(model_dir, device)
    names = classifier.info.class_names
    files, labels = labelled_files(Path(folder), names)
    label_of = dict(zip(files, labels, strict=True))
    read = read_images(files, classifier.info.img_size)
    if not read.images:
        raise ValueError(f"--data {folder}: no readable images in its class folders")
    truth = torch.tensor([label_of[f] for f in read.files])
    predicted = classifier.probabilities(read.images, batch_size).argmax(dim=1)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (truth.numpy(), predicted.numpy()), 1)
    counts = confusion.sum(axis=1)
    per_class = {names[c]: (float(confusion[c, c] / counts[c]), int(counts[c]))
                 for c in range(len(names)) if counts[c]}  # fmt: skip
    accuracy = float(np.trace(confusion) / confusion.sum())
    return Evaluation(accuracy, len(read.files), per_class, confusion, names, read.skipped)


def plot_confusion(result: Evaluation, path: Path) -> Path:
    """Write the confusion matrix (counts, true class by row) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.class_names)
    side = max(4.0, 0.45 * n + 2.0)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(result.confusion, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true",
           title=f"accuracy {result.accuracy:.4f} ({result.num_images} images)")  # fmt: skip
    ax.set_xticklabels(result.class_names, rotation=90)
    ax.set_yticklabels(result.class_names)
    if n <= 30:
        top = result.confusion.max() or 1
        for (i, j), count in np.ndenumerate(result.confusion):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > top / 2 else "black")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(result: Evaluation) -> str:
    """The printed summary: accuracy, then each class's."""
    width = max(len(n) for n in result.class_names)
    lines = [f"accuracy {result.accuracy:.4f} ({result.num_images} images)", "per class:"]
    lines += [f"  {name:<{width}}  {acc:.4f}  ({count} images)"
              for name, (acc, count) in result.per_class.items()]  # fmt: skip
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedpeft-evaluate", description=__doc__.split("\n")[0])
    model_arguments(p)
    p.add_argument("--data", type=Path, required=True, help="<class name>/<images> folder")
    p.add_argument(
        "--confusion",
        type=Path,
        default=Path("confusion_matrix.png"),
        help="confusion-matrix PNG to write (default: ./confusion_matrix.png)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``fedpeft-evaluate``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = evaluate_folder(args.model_dir, args.data, args.device, args.batch_size)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    print(report(result))
    log.info("confusion matrix: %s", plot_confusion(result, args.confusion))
    if result.skipped:
        log.warning("%d file(s) skipped: %s", len(result.skipped),
                    ", ".join(map(str, result.skipped)))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
