"""ELPV: 2,624 electroluminescence images of solar-cell modules' cells (``data.dataset='elpv'``).

A domain far from ImageNet's, offline: the PyPI package ``elpv-dataset`` (Deitsch et al.,
"Automatic classification of defective photovoltaic module cells in electroluminescence
images", Solar Energy 2019; data CC BY-NC-SA 4.0, code Apache-2.0) ships each cell as a
300×300 8-bit grey PNG with an expert's defect probability (0, 1/3, 2/3 or 1) and the
module type (mono- or polycrystalline). ``data.elpv.task`` picks the label, one entry of
:data:`ELPV_TASKS`. The split is fixed by the seed and stratified by that label: a
quarter of the images are the test split.

The images are read from the package's files by path (``datasets`` decodes them when a
partition is converted), not through ``elpv_dataset.utils.load_dataset``, which decodes all
2,624 of them (236 MB) into one array first.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..registry import Registry

if TYPE_CHECKING:
    from datasets import DatasetDict

PACKAGE = "elpv-dataset"
TEST_FRACTION = 0.25
# The project's `elpv` extra (pyproject.toml), its version pinned in constraints.txt: the
# hint names them rather than repeating the pin.
INSTALL_HINT = (
    f"data.dataset='elpv' needs the PyPI package {PACKAGE} (its images are CC BY-NC-SA "
    "4.0): in the checkout, pip install -e '.[elpv]' -c constraints.txt (`make install` "
    "does it)"
)


class Task(NamedTuple):
    """Class names and the labels of the cells, from (defect probabilities, module types)."""

    names: list[str]
    labels: Callable[[np.ndarray, np.ndarray], np.ndarray]


ELPV_TASKS: Registry[Task] = Registry("ELPV task")


def _defect(proba: np.ndarray, types: np.ndarray) -> np.ndarray:
    return (proba >= 0.5).astype(np.int64)  # the expert's probability >= 0.5


def _defect_4(proba: np.ndarray, types: np.ndarray) -> np.ndarray:
    return np.rint(proba * 3).astype(np.int64)  # 0, 1/3, 2/3, 1 → 0..3


def _module_type(proba: np.ndarray, types: np.ndarray) -> np.ndarray:
    return (types == "poly").astype(np.int64)


ELPV_TASKS.add("defect", Task(["functional", "defective"], _defect))
ELPV_TASKS.add("defect-4", Task(["0", "1/3", "2/3", "1"], _defect_4))
ELPV_TASKS.add("module-type", Task(["mono", "poly"], _module_type))


def available() -> bool:
    """Whether ``elpv-dataset`` is installed (checked at start-up, without importing it)."""
    return importlib.util.find_spec("elpv_dataset") is not None


def read_labels() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image paths, defect probabilities and module types from the package's ``labels.csv``.

    Raises
    ------
    ModuleNotFoundError
        If ``elpv-dataset`` is not installed, saying how to install it.

    """
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(INSTALL_HINT)
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    rows = np.genfromtxt(root / "labels.csv", dtype=["U19", "<f8", "U4"],
                         names=["path", "probability", "type"])  # fmt: skip
    paths = np.array([str(root / p) for p in rows["path"]])
    return paths, rows["probability"], rows["type"]


def load_elpv(task: str, seed: int) -> DatasetDict:
    """ELPV labelled for ``task``: ``train`` and ``test`` splits, stratified by label."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from sklearn.model_selection import train_test_split

    spec = ELPV_TASKS.get(task, "data.elpv.task")
    paths, proba, types = read_labels()
    labels = spec.labels(proba, types)
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                                   random_state=seed, stratify=labels)  # fmt: skip
    features = Features({"image": Image(), "label": ClassLabel(names=spec.names)})

    def split(idx: np.ndarray) -> Dataset:
        idx = np.sort(idx)
        return Dataset.from_dict({"image": paths[idx].tolist(), "label": labels[idx].tolist()},
                                 features=features)  # fmt: skip

    return DatasetDict({"train": split(train), "test": split(test)})
