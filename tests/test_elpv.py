"""The built-in ELPV solar-cell dataset: the package's images and labels, a fixed split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from elpv_dataset.utils import load_dataset

from fedpeft.config import ConfigError, parse_run_config
from fedpeft.data import elpv as elpv_lib
from fedpeft.data import load_partition, load_test

CELLS = 12  # cells the reference loader decodes (all 2,624: 236 MB, seconds)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The package's ``load_dataset`` on its first cells: (images, probabilities, types)."""
    paths, _, _ = elpv_lib.read_labels()
    data_dir = Path(paths[0]).parents[1]
    tmp = tmp_path_factory.mktemp("elpv")
    rows = (data_dir / "labels.csv").read_text().splitlines()[:CELLS]
    (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
    (tmp / "images").symlink_to(data_dir / "images")
    return load_dataset(str(tmp / "labels.csv"))


def _config(overrides: str):
    from flwr.common.config import parse_config_args

    return parse_run_config(parse_config_args([overrides]))


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("defect", lambda p, t: (p >= 0.5).astype(int)),
        ("defect-4", lambda p, t: np.searchsorted([0, 1 / 3, 2 / 3, 1], p - 1e-9)),
        ("module-type", lambda p, t: (t == "poly").astype(int)),
    ],
)
def test_each_task_labels_the_packages_cells(reference, task, expected):
    # Prepare
    images, proba, types = reference
    paths, _, _ = elpv_lib.read_labels()
    # Execute: both splits, the first cells found by their file
    dd = elpv_lib.load_elpv(task, seed=0)
    rows = {}
    for split in ("train", "test"):
        raw = dd[split].cast_column("image", dd[split].features["image"].__class__(decode=False))
        for i, image in enumerate(raw["image"]):
            rows[image["path"]] = (split, i)
    # Assert: the same pixels and the label the task's rule gives the package's values
    for cell in range(CELLS):
        split, i = rows[paths[cell]]
        row = dd[split][i]
        assert np.array_equal(np.asarray(row["image"]), images[cell])
        assert row["label"] == expected(proba[cell : cell + 1], types[cell : cell + 1])[0]
    assert len(dd["train"]) + len(dd["test"]) == 2624


def test_the_split_is_a_stratified_quarter_fixed_by_the_seed():
    # Execute
    a, again, other = (elpv_lib.load_elpv("defect", s) for s in (3, 3, 4))
    # Assert: 656 test images, each class's share within one image of the training one's
    assert (len(a["train"]), len(a["test"])) == (1968, 656)
    train, test = (np.bincount(a[s]["label"]) for s in ("train", "test"))
    assert np.all(np.abs(test - train * 656 / 1968) <= 1)
    assert a["test"]["label"] == again["test"]["label"]
    assert a["test"].to_dict()["image"] == again["test"].to_dict()["image"]
    assert a["test"].to_dict()["image"] != other["test"].to_dict()["image"]


def test_a_run_loads_partitions_and_the_test_split_at_the_models_size():
    # Prepare
    cfg = _config("data.dataset='elpv' data.elpv.task='module-type' model.img-size=28 "
                  "data.train-size=40 data.test-size=30")  # fmt: skip
    # Execute
    part = load_partition(cfg.data, cfg.seed, 28, 1, 2)
    test = load_test(cfg.data, cfg.seed, 28)
    # Assert: grey 28×28 images, the task's two classes and their names
    assert part.images.shape == (20, 1, 28, 28) and len(test.labels) == 30
    assert set(part.labels.tolist()) <= {0, 1} and part.num_classes == 2
    assert test.class_names == ("mono", "poly")


def test_a_bad_task_fails_at_start_up_naming_the_tasks():
    with pytest.raises(
        ConfigError, match=r"data.elpv.task='cracks'.*defect.*defect-4.*module-type"
    ):
        _config("data.dataset='elpv' data.elpv.task='cracks'")


def test_without_the_package_start_up_says_how_to_install_it(monkeypatch):
    # Prepare: a machine without elpv-dataset
    monkeypatch.setattr(elpv_lib, "available", lambda: False)
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[elpv\]' -c constraints.txt"):
        _config("data.dataset='elpv'")
