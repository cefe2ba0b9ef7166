"""Atomic per-round checkpoints: global trainable tensors + run state in one safetensors file.

The tensors are stored as safetensors (no pickle), with the strategy's tensors
and the best round's tensors under their own prefixes; the round number, the best
round, the strategy's state, the metrics history, the RNG states and a fingerprint
of the method and backbone travel as JSON in the file's metadata. One file replaced
with ``os.replace`` is atomic: a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from fedpeft.run_folder import CHECKPOINT

if TYPE_CHECKING:
    from fedpeft.record import RoundRecord

    from .rounds import RoundEnd

log = logging.getLogger(__name__)

FILENAME = CHECKPOINT
_TORCH_RNG = "__rng__.torch"
_STATE = "__state__."  # strategy state kept as tensors (server optimizer moments)
_BEST = "__best__."  # the trainable tensors of the best round so far


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or belongs to another run setup."""


@dataclass(frozen=True)
class Best:
    """The round with the best server accuracy so far and its trainable tensors."""

    server_round: int
    arrays: ArrayRecord


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load` returns."""

    arrays: ArrayRecord
    server_round: int
    strategy_state: dict[str, Any]
    rows: list[dict[str, Any]]
    state_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    best: Best | None = None


def fingerprint(config: dict[str, Any], arrays: ArrayRecord) -> dict[str, Any]:
    """What must match for a checkpoint to be resumable: setup and tensor specs."""
    spec = {
        "method": config["peft"]["method"],
        "model": config["model"],
        "dataset": config["data"]["dataset"],
        "tensors": {k: [str(a.dtype), list(a.shape)] for k, a in arrays.items()},
    }
    return json.loads(json.dumps(spec))  # as it reads back from the file


def save(
    out_dir: Path,
    arrays: ArrayRecord,
    server_round: int,
    state: dict[str, Any],
    state_arrays: dict[str, np.ndarray] | None = None,
    best: Best | None = None,
) -> Path:
    """Write ``checkpoint.safetensors`` atomically.

    ``state`` is JSON-able run state (metadata); ``state_arrays`` are the strategy's
    tensors (a server optimizer's moments) and ``best`` the best round's tensors, both
    kept bit-exact in the file's body.
    """
    tensors = {k: np.ascontiguousarray(v.numpy()) for k, v in arrays.items()}
    tensors.update({_STATE + k: np.ascontiguousarray(v) for k, v in (state_arrays or {}).items()})
    if best is not None:
        tensors.update({_BEST + k: np.ascontiguousarray(v.numpy()) for k, v in best.arrays.items()})
        state = {**state, "best_round": best.server_round}
    tensors[_TORCH_RNG] = torch.get_rng_state().numpy()
    legacy = np.random.get_state()
    meta = {"round": server_round, "rng": {"numpy": [legacy[0], legacy[1].tolist(), *legacy[2:]]},
            **state}  # fmt: skip
    path = out_dir / FILENAME
    tmp = out_dir / (FILENAME + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"fedpeft": json.dumps(meta, default=str)})
        os.replace(tmp, path)
    except (OSError, SafetensorError) as exc:  # e.g. a full disk: keep the last good one
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"writing {path} after round {server_round} failed ({exc}); the previous "
            "checkpoint is unchanged"
        ) from exc
    return path


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b or a[key] != b[key]:
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}".strip("."))
    return f"{where}: checkpoint has {a!r}, this run has {b!r}"


def load(out_dir: Path, expected: dict[str, Any]) -> Checkpoint:
    """Read the checkpoint in ``out_dir``; refuse one from another method or backbone."""
    path = out_dir / FILENAME
    if not path.exists():
        raise CheckpointError(f"output.resume: no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {})["fedpeft"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, KeyError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"{path} is not a FedPEFT checkpoint: {exc}") from exc
    if meta.get("fingerprint") != expected:
        diff = _first_difference(meta.get("fingerprint"), expected)
        raise CheckpointError(f"{path} belongs to another setup: {diff}")
    torch.set_rng_state(torch.from_numpy(tensors.pop(_TORCH_RNG)))
    extra = _pop_prefixed(tensors, _STATE)
    best = _best(meta, _pop_prefixed(tensors, _BEST))
    kind, keys, pos, has_gauss, cached = meta["rng"]["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    log.info("Resuming from %s after round %d", path, meta["round"])
    # safetensors stores its keys sorted; the model's order comes back from the fingerprint,
    # so what depends on the order sees the uninterrupted run's arrays (central DP draws its
    # seeded noise tensor by tensor, in this order)
    tensors = _in_order(tensors, list(expected.get("tensors", {})))
    return Checkpoint(
        arrays=ArrayRecord({k: Array(v) for k, v in tensors.items()}),
        server_round=int(meta["round"]),
        strategy_state=meta.get("strategy", {}),
        rows=meta.get("rows", []),
        state_arrays=extra,
        best=best,
    )


def _in_order(tensors: dict[str, np.ndarray], order: list[str]) -> dict[str, np.ndarray]:
    """``tensors`` with the keys in ``order`` first, in that order, then the rest."""
    first = [k for k in order if k in tensors]
    placed = set(first)
    rest = [k for k in tensors if k not in placed]
    return {k: tensors[k] for k in [*first, *rest]}


def _pop_prefixed(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: tensors.pop(k) for k in sorted(tensors) if k.startswith(prefix)}


def _best(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Best | None:
    if meta.get("best_round") is None or not arrays:  # written before best rounds were kept
        return None
    return Best(int(meta["best_round"]), ArrayRecord({k: Array(v) for k, v in arrays.items()}))


def read_best(out_dir: Path) -> Best | None:
    """The best round kept in ``out_dir``'s checkpoint (``None`` if it keeps none).

    Reads only the best round's tensors and leaves the RNG states alone; call it
    after :func:`load` has checked the checkpoint's setup.
    """
    path = out_dir / FILENAME
    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads((f.metadata() or {})["fedpeft"])
        arrays = {k[len(_BEST) :]: f.get_tensor(k) for k in sorted(f.keys()) if k.startswith(_BEST)}
    return _best(meta, arrays)


class Checkpointer:
    """The checkpoint step: after each recorded round, one atomic checkpoint.

    Parameters
    ----------
    out_dir : Path
        The run folder.
    fingerprint : dict
        What a resume must match (:func:`fingerprint`).

    """

    def __init__(self, out_dir: Path, fingerprint: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.fingerprint = fingerprint

    def save(self, end: RoundEnd, rows: list[RoundRecord], best: Best | None) -> Path:
        """Checkpoint the round ``end`` closes, with the run's ``rows`` and ``best`` round."""
        state = {"fingerprint": self.fingerprint, "strategy": end.strategy_state,
                 "rows": [r.to_dict() for r in rows]}  # fmt: skip
        return save(self.out_dir, end.arrays, end.server_round, state, end.strategy_arrays, best)
