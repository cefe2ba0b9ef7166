"""The ``data.*`` keys this package reads, as a protocol.

:class:`fedpeft.config.DataConfig` is the one implementation. The loaders are typed
against this protocol rather than the config class because the config package imports
this package's registries (``SOURCES``, ``BUILTIN_DATASETS``, ``PARTITIONERS``) to
validate ``data.*`` choices: this keeps the arrow one way.
"""

from __future__ import annotations

from typing import Protocol


class DataSettings(Protocol):
    """``data.*``: where the images come from, how many, and how they are partitioned."""

    @property
    def source(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def train_size(self) -> int: ...
    @property
    def test_size(self) -> int: ...
    @property
    def test_split(self) -> str: ...
    @property
    def image_column(self) -> str: ...
    @property
    def label_column(self) -> str: ...
    @property
    def partitioner(self) -> str: ...
    @property
    def dirichlet__alpha(self) -> float: ...
    @property
    def dirichlet__min_partition_size(self) -> int: ...
    @property
    def shard__classes_per_client(self) -> int: ...
    @property
    def elpv__task(self) -> str: ...
