"""Pooled backbone features, computed once when nothing before the head trains.

With the head-only method every round feeds the same images through the same frozen
backbone; only the head changes. A worker therefore computes the pooled features
(``forward_head(..., pre_logits=True)``: the tokens pooled, ``fc_norm`` applied) of
each data set once and trains or evaluates the head on them. The cache lives on the
model object (a :class:`weakref.WeakKeyDictionary`), so another backbone, resolution
or method is another model and never reuses it; within a model it is keyed by the
data's :attr:`~fedpeft.data.ImageTensors.key` (data config, seed, partition), the
device and the precision.
"""

from __future__ import annotations

import logging
import weakref

import torch
from torch import nn

from .backbones import HEAD_PREFIXES
from .data.tensors import ImageTensors
from .engine import Engine

log = logging.getLogger(__name__)

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def only_head_trains(model: nn.Module) -> bool:
    """True when every trainable tensor is the head's and the head has no dropout."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    drop = getattr(getattr(model, "head_drop", None), "p", 0.0)
    return bool(trainable) and all(n.startswith(HEAD_PREFIXES) for n in trainable) and not drop


def pooled_features(
    model: nn.Module, data: ImageTensors, engine: Engine, batch_size: int
) -> torch.Tensor:
    """``N × D`` fp32 pre-logit features of ``data`` on the engine's device.

    Normal (not inference-mode) tensors, so a head can be trained on them.
    """
    was_training = model.training
    model.eval()
    with torch.inference_mode(False), torch.no_grad():
        out = torch.empty(len(data), model.num_features, device=engine.device)
        for start in range(0, len(data), batch_size):
            x = engine.pipeline(data.images[start : start + batch_size])
            with engine.precision.autocast():
                feats = model.forward_head(model.forward_features(x), pre_logits=True)
            out[start : start + len(x)] = feats.float()
    model.train(was_training)
    return out


def cached_features(
    model: nn.Module, data: ImageTensors, engine: Engine, batch_size: int
) -> torch.Tensor | None:
    """:func:`pooled_features`, computed once per model and data; ``None`` when not valid.

    Valid only when :func:`only_head_trains` and ``data`` has a key.
    """
    if not data.key or not only_head_trains(model):
        return None
    per_model = _CACHE.setdefault(model, {})
    key = (data.key, str(engine.device), engine.precision.name, engine.pipeline.size)
    if key not in per_model:
        per_model[key] = pooled_features(model, data, engine, batch_size)
        log.info("Cached the frozen features of %d images (head-only training)", len(data))
    return per_model[key]
