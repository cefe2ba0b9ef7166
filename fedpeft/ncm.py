"""FedNCM head initialisation (Legate et al. 2023): class means of the frozen features.

Each client sends, once before round 1, the per-class sums and counts of the pooled
features its model computes (the backbone as received, the method's modules at their
initial values); the server adds them up and sets the head to the normalised class
means (bias 0). Sums, not means, travel, so the server's result is exactly the
centralised class mean of all clients' images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data.tensors import ImageTensors
from .engine import Engine, make_engine
from .features import cached_features, pooled_features


def class_feature_sums(
    model: nn.Module, data: ImageTensors, batch_size: int, engine: Engine | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sums (``C × D``, float32) and counts (``C``, int64) of the pooled features.

    Head-only: the features its training then reuses (:mod:`fedpeft.features`).
    """
    engine = engine or make_engine(model)
    feats = cached_features(model, data, engine, batch_size)
    if feats is None:
        feats = pooled_features(model, data, engine, batch_size)
    sums = torch.zeros(data.num_classes, feats.shape[1], dtype=torch.float64)
    sums.index_add_(0, data.labels, feats.double().cpu())
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    return sums.float().numpy(), counts.numpy().astype(np.int64)


def ncm_head(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head weight (rows: unit-norm class means; 0 for a class nobody holds) and bias (0)."""
    means = sums.astype(np.float64) / np.maximum(counts, 1)[:, None]
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    weight = np.where(norms > 0, means / np.where(norms > 0, norms, 1.0), 0.0)
    return weight.astype(np.float32), np.zeros(len(counts), dtype=np.float32)
