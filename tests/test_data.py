"""Sources, partitioners and tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fedpeft.config import DataConfig
from fedpeft.data import federated_images, load_partition
from fedpeft.data.tensors import ImageTensors, hold_out, to_tensors


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "shard"])
def test_partitions_cover_the_training_pool_disjointly(partitioner):
    cfg = DataConfig(dataset="digits", partitioner=partitioner, train_size=0)
    fed = federated_images(cfg, num_partitions=5, seed=1)
    sizes = [len(fed.partition(i)) for i in range(5)]
    if partitioner == "shard":  # 5 clients × 2 classes: flwr-datasets leaves classes unused
        assert 0 < sum(sizes) <= len(fed.partitioner.dataset)
    else:
        assert sum(sizes) == len(fed.partitioner.dataset)
    assert fed.num_classes == 10 and len(fed.test) == 360


def test_dirichlet_small_alpha_skews_labels_and_keeps_min_size():
    cfg = DataConfig(dataset="digits", partitioner="dirichlet", dirichlet__alpha=0.1,
                     dirichlet__min_partition_size=20, train_size=0)  # fmt: skip
    fed = federated_images(cfg, num_partitions=5, seed=3)
    for i in range(5):
        labels = np.asarray(fed.partition(i)["label"])
        assert len(labels) >= 20
    # IID baseline: every client holds all 10 classes; α=0.1 leaves most with few.
    dominant = [np.bincount(fed.partition(i)["label"], minlength=10).max() / len(fed.partition(i))
                for i in range(5)]  # fmt: skip
    assert np.mean(dominant) > 0.3  # IID would give ≈ 0.1


def test_shard_gives_k_classes_per_client():
    cfg = DataConfig(dataset="digits", partitioner="shard", shard__classes_per_client=2,
                     train_size=0)  # fmt: skip
    fed = federated_images(cfg, num_partitions=5, seed=0)
    assert all(len(set(fed.partition(i)["label"])) == 2 for i in range(5))


def test_fashion_mnist_is_stored_at_its_source_size_capped_at_the_models():
    # Prepare
    cfg = DataConfig(dataset="fashion-mnist", train_size=300, test_size=100)
    # Execute: a 32 px model (above the source's 28 px) and a 16 px one (below)
    part = load_partition(cfg, 0, 32, 0, 3)
    small = load_partition(cfg, 0, 16, 0, 3)
    # Assert: greyscale kept in one channel; 28 px, or downsampled once to the cap
    assert part.images.shape == (100, 1, 28, 28) and part.images.dtype == torch.uint8
    assert small.images.shape == (100, 1, 16, 16)
    assert part.num_classes == 10
    assert load_partition(cfg, 0, 32, 0, 3) is part  # cached per process
    assert part.key and part.key != small.key != load_partition(cfg, 0, 32, 1, 3).key


def test_image_folder_source_with_held_out_test(tmp_path):
    # Prepare: 2 classes × 6 colour images of odd sizes, no test split on disk
    for c, colour in enumerate(("red", "blue")):
        (tmp_path / f"class{c}").mkdir()
        for i in range(6):
            Image.new("RGB", (20 + i, 17), colour).save(tmp_path / f"class{c}" / f"{i}.png")
    cfg = DataConfig(source="folder", dataset=str(tmp_path), test_size=4, train_size=0)
    # Execute
    fed = federated_images(cfg, num_partitions=2, seed=0)
    tensors = to_tensors(fed.test, 16, fed.num_classes)
    # Assert
    assert fed.num_classes == 2 and len(fed.test) == 4
    assert sum(len(fed.partition(i)) for i in range(2)) == 8
    assert tensors.images.shape == (4, 3, 16, 16)


def test_parquet_source(tmp_path):
    from datasets import Dataset

    imgs = [Image.new("L", (8, 8), i * 20) for i in range(10)]
    Dataset.from_dict({"img": imgs, "target": [i % 2 for i in range(10)]}).to_parquet(
        str(tmp_path / "d.parquet")
    )
    cfg = DataConfig(source="parquet", dataset=str(tmp_path / "d.parquet"), test_size=2,
                     train_size=0)  # fmt: skip
    fed = federated_images(cfg, num_partitions=2, seed=0)
    assert len(fed.test) == 2 and fed.num_classes == 2


def test_unknown_column_is_named(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"img": [Image.new("L", (4, 4))] * 4, "y": [0, 1, 0, 1]}).to_parquet(
        str(tmp_path / "d.parquet")
    )
    cfg = DataConfig(source="parquet", dataset=str(tmp_path / "d.parquet"), label_column="cls")
    with pytest.raises(ValueError, match=r"data.label-column='cls'"):
        federated_images(cfg, num_partitions=2, seed=0)


def test_a_held_out_slice_is_seeded_disjoint_and_keeps_every_image():
    # Prepare: 50 images whose pixel value is their index
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 4, 4)
    data = ImageTensors(images.contiguous(), torch.arange(50) % 5, 5, key="p3")
    # Execute
    train, test = hold_out(data, 0.2, seed=7)
    again, other = hold_out(data, 0.2, seed=7), hold_out(data, 0.2, seed=8)
    # Assert: 10 held out, 40 kept, together every image once; the same split for the same
    # seed, another for another; keys that name the part, for the feature cache
    ids = lambda d: d.images[:, 0, 0, 0].tolist()  # noqa: E731
    assert (len(train), len(test)) == (40, 10)
    assert sorted(ids(train) + ids(test)) == list(range(50))
    assert (train.labels == train.images[:, 0, 0, 0].long() % 5).all()
    assert ids(again[1]) == ids(test) and ids(other[1]) != ids(test)
    assert (train.key, test.key) == ("p3/train@0.2", "p3/held-out@0.2")


def test_a_tiny_partition_keeps_one_image_on_each_side():
    data = ImageTensors(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), 2)
    train, test = hold_out(data, 0.01, seed=0)
    assert (len(train), len(test)) == (1, 1)
