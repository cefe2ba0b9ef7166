"""``fedpeft_model.json``: what an exported model is, enough to rebuild it without the run.

An exported model folder holds :data:`WEIGHTS_FILE` (the whole model's state dict,
safetensors) and :data:`INFO_FILE` (a :class:`ModelInfo`): the timm model, its input
size and normalisation, the class names, the PEFT method and its parameters (to
rebuild the module structure the weights belong to) and the round exported.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INFO_FILE = "fedpeft_model.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """The contents of ``fedpeft_model.json``."""

    timm_name: str  # timm.create_model name (pretrained=False when loading)
    img_size: int  # square input resolution in pixels
    num_classes: int
    mean: list[float]  # input normalisation (timm.data.resolve_data_config of the backbone)
    std: list[float]
    class_names: list[str]  # by class id
    method: str  # the PEFT method (peft_strategies registry name)
    method_params: dict[str, Any]  # its config (peft.<method>.*), to rebuild its modules
    round_choice: str  # what was asked for: "best", "final" or a round number
    round: int | None = None  # the round whose tensors were exported (None: unknown)
    accuracy: float | None = None  # the run's server accuracy at that round, if recorded
    source: str = ""  # the trainable-tensors file of the run it was exported from
    run_id: int = 0
    weights_file: str = WEIGHTS_FILE
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        """Write ``folder/fedpeft_model.json``."""
        path = folder / INFO_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path


def read_info(folder: Path) -> ModelInfo:
    """Read ``folder/fedpeft_model.json``.

    Raises
    ------
    FileNotFoundError
        If the folder has no ``fedpeft_model.json`` (not an exported model).
    ValueError
        If the file is not a model description this version reads; names the file.

    """
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; {folder} is not a model folder written by fedpeft-export"
        )
    try:
        data = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(ModelInfo)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}")
        info = ModelInfo(**data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if info.format_version != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {info.format_version}, this version reads "
                         f"{FORMAT_VERSION}")  # fmt: skip
    if len(info.class_names) != info.num_classes:
        raise ValueError(f"{path}: {len(info.class_names)} class names for "
                         f"{info.num_classes} classes")  # fmt: skip
    return info
