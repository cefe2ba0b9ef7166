"""``data.partitioner``: the flwr-datasets partitioner that splits the training pool.

Adding a partitioner is one function registered in :data:`PARTITIONERS`; flwr-datasets
is imported inside each (seconds of imports, paid only when data is partitioned).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from flwr_datasets.partitioner.partitioner import Partitioner

    from .settings import DataSettings

MakePartitioner = Callable[["DataSettings", int, int], "Partitioner"]
PARTITIONERS: Registry[MakePartitioner] = Registry("partitioner")


@PARTITIONERS.register("iid")
def iid(cfg: DataSettings, num_partitions: int, seed: int) -> Partitioner:
    """Uniformly at random, equal sizes."""
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=num_partitions)


@PARTITIONERS.register("dirichlet")
def dirichlet(cfg: DataSettings, num_partitions: int, seed: int) -> Partitioner:
    """Per-class Dirichlet(alpha) proportions, resampled until every client holds at least
    ``data.dirichlet.min-partition-size`` samples (the paper's procedure).
    """  # noqa: D205
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        alpha=cfg.dirichlet__alpha,
        min_partition_size=cfg.dirichlet__min_partition_size,
        self_balancing=False,
        shuffle=True,
        seed=seed,
    )


@PARTITIONERS.register("shard")
def shard(cfg: DataSettings, num_partitions: int, seed: int) -> Partitioner:
    """Each client holds ``data.shard.classes-per-client`` classes."""
    from flwr_datasets.partitioner import PathologicalPartitioner

    return PathologicalPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        num_classes_per_partition=cfg.shard__classes_per_client,
        class_assignment_mode="deterministic",
        shuffle=True,
        seed=seed,
    )


def make_partitioner(cfg: DataSettings, num_partitions: int, seed: int) -> Partitioner:
    """The partitioner ``data.partitioner`` names (by the ``label`` column)."""
    return PARTITIONERS.get(cfg.partitioner, "data.partitioner")(cfg, num_partitions, seed)
