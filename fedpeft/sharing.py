"""Which trainable tensors travel: a method's :class:`~peft_strategies.base.Sharing` on a model.

Every process builds the same seeded model. Of its trainable tensors the server
holds, sends and aggregates the *shared* ones; the *local* ones (FedSA-LoRA's B) train
on the client and stay there, kept in the client's ``Context.state`` between the
rounds it is sampled in (:data:`LOCAL`), in simulation and in deployment alike; and a
method may train (and send up) only part of the shared set in a round (RoLoRA).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict
from torch import nn

from peft_strategies import get_method
from peft_strategies.base import Sharing

from .arrays import load_trainable
from .config import PeftConfig

LOCAL = "peft-local"  # Context.state: this client's local tensors (FedSA-LoRA's B)

# The local tensors as the seeded build left them: what a client starts from the first
# time it is sampled. Kept per model, since a worker's cached model is shared by the
# clients it runs and holds the last one's local tensors.
_INITIAL: weakref.WeakKeyDictionary[nn.Module, dict[str, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def sharing_of(pcfg: PeftConfig) -> Sharing:
    """The method's sharing (``peft.lora.federation`` for LoRA), with ``peft.head.local``."""
    sharing = get_method(pcfg.method).sharing(pcfg.params)
    if pcfg.head.local:
        return dataclasses.replace(sharing, local=(*sharing.local, "head"))
    return sharing


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def shared_names(model: nn.Module, sharing: Sharing) -> frozenset[str]:
    """The trainable tensors the server holds and sends: all but the local ones."""
    return frozenset(n for n in _trainable(model) if not sharing.is_local(n))


def uplink_names(shared: frozenset[str], sharing: Sharing, server_round: int) -> frozenset[str]:
    """The shared tensors a reply carries in ``server_round`` (all but RoLoRA's frozen factor)."""
    return frozenset(n for n in shared if sharing.trains(n, server_round))


def shared_state(model: nn.Module, sharing: Sharing) -> dict[str, torch.Tensor]:
    """The shared trainable tensors by name (the server's initial arrays)."""
    names = shared_names(model, sharing)
    return {n: p.detach() for n, p in _trainable(model).items() if n in names}


def load_shared(model: nn.Module, record: ArrayRecord, sharing: Sharing) -> None:
    """Copy ``record`` into the shared tensors, strictly (keys and shapes)."""
    load_trainable(model, record, shared_names(model, sharing))


def remember_initial(model: nn.Module, sharing: Sharing) -> None:
    """Keep the freshly built model's local tensors (called once per build)."""
    local = {n: p.detach().clone() for n, p in _trainable(model).items() if sharing.is_local(n)}
    if local:
        _INITIAL[model] = local


def restore_local(model: nn.Module, sharing: Sharing, state: RecordDict) -> bool:
    """Put this client's local tensors into ``model``: from ``state``, else the initial ones.

    Returns whether they came from ``state`` (the client trained in an earlier round).

    Raises
    ------
    ValueError
        If ``state`` holds other tensors or other shapes than the model's local set.

    """
    if not sharing.local:
        return False
    record = state.array_records.get(LOCAL)
    if record is None:
        with torch.no_grad():
            for name, value in _INITIAL[model].items():
                model.get_parameter(name).copy_(value)
        return False
    local = frozenset(n for n in _trainable(model) if sharing.is_local(n))
    try:
        load_trainable(model, record, local)
    except ValueError as exc:
        raise ValueError(f"Context.state[{LOCAL!r}]: {exc}") from exc
    return True


def keep_local(model: nn.Module, sharing: Sharing, state: RecordDict) -> None:
    """Store the model's local tensors in ``state`` for this client's next round."""
    if not sharing.local:
        return
    local = {n: p for n, p in _trainable(model).items() if sharing.is_local(n)}
    state[LOCAL] = ArrayRecord(
        {n: Array(np.ascontiguousarray(p.detach().cpu().numpy())) for n, p in local.items()}
    )


@contextmanager
def training_round(model: nn.Module, sharing: Sharing, server_round: int) -> Iterator[None]:
    """Within it, only the tensors that train in ``server_round`` have ``requires_grad``.

    The others (RoLoRA's frozen factor) are frozen for the round and thawed on exit, so
    the optimiser, DP-SGD's per-sample gradients and :func:`~fedpeft.arrays.trainable_state`
    all see the round's set.
    """
    frozen = [p for n, p in _trainable(model).items() if not sharing.trains(n, server_round)]
    for param in frozen:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in frozen:
            param.requires_grad_(True)
