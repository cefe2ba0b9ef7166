"""Datasets, partitioning and image tensors for clients and the server."""

from .federated import FederatedImages, federated_images
from .tensors import ImageTensors, load_partition, load_test

__all__ = [
    "FederatedImages",
    "ImageTensors",
    "federated_images",
    "load_partition",
    "load_test",
]
