"""A SuperNode's node-config: partition or local image folder, and a local weights file."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from PIL import Image

from client_app.node_data import head_classes, node_setup
from fedpeft.config import parse_node_config, parse_run_config
from fedpeft.data.folder import load_image_folder


def _write_images(root, classes: dict[str, int], size: int = 8) -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def _arrays(num_classes: int) -> ArrayRecord:
    return ArrayRecord({"head.weight": Array(np.zeros((num_classes, 4), dtype=np.float32))})


def test_integer_class_folders_become_labels(tmp_path):
    # Prepare: a device holding only classes 3 and 7 of a 10-class task
    _write_images(tmp_path, {"3": 2, "7": 3})
    # Execute
    data = load_image_folder(str(tmp_path), 16, 10)
    # Assert
    # stored at the source's 8 px greyscale, not the model's 16 px (resized per batch)
    assert tuple(data.images.shape) == (5, 1, 8, 8)
    assert data.labels.tolist() == [3, 3, 7, 7, 7]
    assert data.num_classes == 10


def test_named_class_folders_follow_classes_txt(tmp_path):
    # Prepare
    _write_images(tmp_path, {"cat": 1, "dog": 2})
    (tmp_path / "classes.txt").write_text("ant\ndog\ncat\n")
    # Execute
    data = load_image_folder(str(tmp_path), 8, 3)
    # Assert: ids from classes.txt, not from the folders' sorted order
    assert data.labels.tolist() == [2, 1, 1]


@pytest.mark.parametrize(
    ("classes", "num_classes", "message"),
    [
        ({"cat": 1}, 10, "not an integer class id"),
        ({"12": 1}, 10, "is class 12, but the run's model has 10 classes"),
    ],
)
def test_bad_class_folders_are_named(tmp_path, classes, num_classes, message):
    # Prepare
    _write_images(tmp_path, classes)
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        load_image_folder(str(tmp_path), 8, num_classes)


def test_missing_or_empty_folder_is_refused(tmp_path):
    # Execute / Assert
    with pytest.raises(ValueError, match="not a folder"):
        load_image_folder(str(tmp_path / "nope"), 8, 10)
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(str(tmp_path), 8, 10)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"partition-id": 0, "num-partitions": 2, "colour": "red"}, r"unknown node-config key"),
        ({"partition-id": 0, "num-partitions": 2, "data-path": "/d"}, "either data-path"),
        ({"partition-id": 0}, "set partition-id and num-partitions, or data-path"),
        ({"partition-id": 2, "num-partitions": 2}, r"partition-id=2: must be in \[0, 2\)"),
        ({"partition-id": "0", "num-partitions": 2}, "partition-id='0': expected an integer"),
        ({"data-path": "/d", "weights-path": "/no/such.safetensors"}, "weights-path=.*no such"),
    ],
)
def test_bad_node_config_is_named(config, message):
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        parse_node_config(config)


def test_weights_path_replaces_the_run_weights(tmp_path):
    # Prepare
    _write_images(tmp_path / "imgs", {"1": 2})
    weights = tmp_path / "backbone.safetensors"
    weights.write_bytes(b"")
    cfg = parse_run_config({"model.img-size": 16})
    config = {"data-path": str(tmp_path / "imgs"), "weights-path": str(weights)}
    # Execute
    node = node_setup(cfg, config, _arrays(10), node_id=123)
    # Assert
    assert node.model.weights == str(weights)
    assert node.model.name == cfg.model.name and node.model.img_size == 16
    assert node.data.labels.tolist() == [1, 1] and node.client_id == 123


def test_partition_node_keeps_the_run_weights():
    # Prepare
    cfg = parse_run_config({"data.dataset": "digits", "model.img-size": 8})
    # Execute
    node = node_setup(cfg, {"partition-id": 1, "num-partitions": 3}, _arrays(10), node_id=9)
    # Assert
    assert node.model == cfg.model and node.client_id == 1
    assert 0 < len(node.data) < 1797


def test_head_classes_reads_the_received_head():
    # Execute / Assert
    assert head_classes(_arrays(37)) == 37
    with pytest.raises(ValueError, match="no head weight"):
        head_classes(ArrayRecord({"blocks.0.w": Array(np.zeros(2, dtype=np.float32))}))


def test_disk_cache_is_opt_in_and_round_trips(tmp_path, monkeypatch):
    # Prepare
    from fedpeft.data import diskcache

    monkeypatch.setenv("FEDPEFT_CACHE", str(tmp_path / "cache"))
    _write_images(tmp_path / "imgs", {"2": 3})
    calls = []

    def build():
        calls.append(1)
        return load_image_folder(imgs, 8, 5)

    imgs = str(tmp_path / "imgs")
    key = {"folder": imgs, "files": diskcache.folder_fingerprint(imgs)}
    # Execute: off by default, then on
    monkeypatch.delenv("FEDPEFT_DATA_CACHE", raising=False)
    diskcache.cached(key, build)
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("FEDPEFT_DATA_CACHE", "1")
    first = diskcache.cached(key, build)
    second = diskcache.cached(key, build)
    # Assert: built twice (off, then the first cached call); the third came from disk
    assert len(calls) == 2
    assert diskcache.path_for(key).is_file()
    assert (second.images == first.images).all() and second.labels.tolist() == [2, 2, 2]
    assert second.num_classes == 5
    # A changed folder is a different key
    _write_images(tmp_path / "imgs", {"4": 1})
    changed = {**key, "files": diskcache.folder_fingerprint(imgs)}
    assert diskcache.path_for(changed) != diskcache.path_for(key)
