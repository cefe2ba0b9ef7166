"""Datasets, partitioning and image tensors for clients and the server.

``datasets`` and ``flwr_datasets`` (seconds of imports) load only when a dataset is
actually read, so a deployed ClientApp whose data comes from the disk cache never
imports them.
"""

from __future__ import annotations

from typing import Any

from .tensors import ImageTensors, load_partition, load_test

__all__ = [
    "FederatedImages",
    "ImageTensors",
    "federated_images",
    "load_partition",
    "load_test",
]


def __getattr__(name: str) -> Any:
    if name in ("FederatedImages", "federated_images"):
        from . import federated

        return getattr(federated, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
