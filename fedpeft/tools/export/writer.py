"""A run folder → a standalone model folder (``fedpeft-export``).

The run's global model is rebuilt as the ServerApp built it (:func:`fedpeft.model.build_model`
from the recorded config, the number of classes and the seed: the frozen backbone's
weights come from the run's ``model.weights`` source), the chosen round's trainable
tensors are loaded into it strictly, and the PEFT method folds itself
(:meth:`peft_strategies.base.PeftMethod.fold`: LoRA merges into ``qkv``; adapters and
prompts stay modules). The whole state dict is written as one safetensors file beside
``fedpeft_model.json`` (:mod:`fedpeft.tools.export.info`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_model
from torch import nn

from peft_strategies import get_method

from ...arrays import to_arrayrecord
from ...backbones import normalization
from ...config import RunConfig, config_from_record
from ...model import build_model
from ...record import RunRecord, read_run
from ...run_folder import METRICS_JSON
from ...sharing import load_shared, sharing_of
from .info import WEIGHTS_FILE, ModelInfo
from .run_files import exported_round, round_accuracy, trainable_file

log = logging.getLogger(__name__)

HEAD_WEIGHT = "head.weight"  # timm ViTs' classifier; always among the trainable tensors


@dataclass
class GlobalModel:
    """A run's global model at one round, before folding, and where it came from."""

    model: nn.Module
    config: RunConfig
    record: RunRecord
    class_names: list[str]
    source: Path  # the trainable-tensors file loaded


def _class_names(record: RunRecord, tensors: dict[str, torch.Tensor], path: Path) -> list[str]:
    if HEAD_WEIGHT not in tensors:
        raise ValueError(f"{path}: no {HEAD_WEIGHT!r} among the tensors; not a run's "
                         "trainable set")  # fmt: skip
    num_classes = int(tensors[HEAD_WEIGHT].shape[0])
    if not record.class_names:  # written before runs recorded their class names
        log.warning("%s: the run recorded no class names; using 0 .. %d", path, num_classes - 1)
        return [str(i) for i in range(num_classes)]
    if len(record.class_names) != num_classes:
        raise ValueError(f"{path}: a head of {num_classes} classes, but metrics.json names "
                         f"{len(record.class_names)}")  # fmt: skip
    return list(record.class_names)


def global_model(run_dir: Path, choice: str | int = "final") -> GlobalModel:
    """The run's global model with ``--round choice``'s trainable tensors, in eval mode.

    Raises
    ------
    FileNotFoundError
        If the run folder has no ``metrics.json`` or no file for ``choice``.
    ValueError
        If the recorded config, the class names or the tensors do not fit together.

    """
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_JSON
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no such file; {run_dir} is not a run folder")
    record = read_run(metrics)
    cfg = config_from_record(record.config)
    path = trainable_file(run_dir, choice)
    tensors = load_file(str(path))
    names = _class_names(record, tensors, path)
    model = build_model(cfg.model, cfg.peft, len(names), cfg.seed)
    try:
        load_shared(model, to_arrayrecord(tensors), sharing_of(cfg.peft))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return GlobalModel(model.eval(), cfg, record, names, path)


def export_run(run_dir: Path, out_dir: Path, choice: str | int = "final") -> ModelInfo:
    """Write ``out_dir/model.safetensors`` and ``out_dir/fedpeft_model.json``; return the info."""
    glob = global_model(run_dir, choice)
    cfg, model = glob.config, glob.model
    mean, std = normalization(model)
    method = get_method(cfg.peft.method)
    with torch.no_grad():
        folded = method.fold(model, cfg.peft.params).eval()
    server_round = exported_round(glob.record, choice, glob.source)
    info = ModelInfo(
        timm_name=cfg.model.name,
        img_size=cfg.model.img_size,
        num_classes=len(glob.class_names),
        mean=list(mean),
        std=list(std),
        class_names=glob.class_names,
        method=cfg.peft.method,
        method_params=dataclasses.asdict(cfg.peft.params),
        round_choice=str(choice),
        round=server_round,
        accuracy=round_accuracy(glob.record, server_round),
        source=str(glob.source),
        run_id=glob.record.run_id,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(folded, str(out_dir / WEIGHTS_FILE))  # shared tensors (one adapter) stored once
    info.write(out_dir)
    n_params = sum(p.numel() for p in folded.parameters())
    log.info("Exported %s (%s, round %s of %s, %d parameters) to %s", cfg.model.name,
             cfg.peft.method, server_round, run_dir, n_params, out_dir)  # fmt: skip
    return info
