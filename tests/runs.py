"""A run folder as the ServerApp leaves it, made without a run: tiny timm ``test_vit``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.numpy import save_file

from fedpeft.arrays import trainable_state
from fedpeft.config import RunConfig, parse_run_config
from fedpeft.model import build_model
from fedpeft.record import RoundRecord, RunRecord

CLASS_NAMES = ["cat", "dog", "T-shirt/top"]
# metrics.json's rounds: round 1 has the best accuracy, round 2 is the last
ACCURACIES = [0.30, 0.70, 0.60]


def tiny_config(method: str, **overrides: object) -> RunConfig:
    """A run config of timm's ``test_vit`` (random weights, 32 px) trained with ``method``."""
    flat = {"model.name": "test_vit", "model.weights": "random", "model.img-size": 32,
            "peft.method": method, "seed": 7, **overrides}  # fmt: skip
    return parse_run_config(flat)


def trained_model(cfg: RunConfig, num_classes: int, seed: int) -> torch.nn.Module:
    """The run's global model with its trainable tensors moved off their initial values."""
    model = build_model(cfg.model, cfg.peft, num_classes, cfg.seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in trainable_state(model).values():
            param.add_(0.05 * torch.randn(param.shape, generator=g))
    return model.eval()


def save_trainable(model: torch.nn.Module, path: Path) -> None:
    """Save the trainable tensors as the ServerApp does (``RunRecorder.save_arrays``)."""
    save_file({k: v.cpu().numpy() for k, v in trainable_state(model).items()}, str(path))


def make_run(run_dir: Path, method: str, class_names: list[str] | None = None,
             **overrides: object) -> torch.nn.Module:  # fmt: skip
    """Write ``metrics.json`` and ``final_trainable.safetensors``; return the global model."""
    names = CLASS_NAMES if class_names is None else class_names
    cfg = tiny_config(method, **overrides)
    model = trained_model(cfg, len(names) or len(CLASS_NAMES), seed=1)
    run_dir.mkdir(parents=True, exist_ok=True)
    rounds = [RoundRecord(round=i, accuracy=a) for i, a in enumerate(ACCURACIES)]
    record = RunRecord(run_id=5, config=dataclasses.asdict(cfg), class_names=list(names),
                       rounds=rounds, status="completed")  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(record.to_dict(), indent=2, default=str))
    save_trainable(model, run_dir / "final_trainable.safetensors")
    return model
