"""An exported model folder → ``nn.Module``, without downloading or loading pretrained weights.

The architecture comes from ``fedpeft_model.json``: timm's model
(``pretrained=False``, the recorded input size and number of classes), then the
PEFT method's module structure as folding left it
(:meth:`peft_strategies.base.PeftMethod.folded_structure`: adapters, prompts; merged
LoRA is the plain timm model). The weights file is loaded into it strictly.
"""

from __future__ import annotations

from pathlib import Path

import timm
from safetensors.torch import load_model
from torch import nn

from peft_strategies import get_method

from .info import ModelInfo, read_info


def build(info: ModelInfo) -> nn.Module:
    """The exported model's architecture with random weights (nothing downloaded)."""
    model = timm.create_model(info.timm_name, pretrained=False, num_classes=info.num_classes,
                              img_size=info.img_size)  # fmt: skip
    method = get_method(info.method)
    try:
        params = method.config_cls(**info.method_params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"method_params {info.method_params!r} of {info.method!r}: {exc}") from exc
    return method.folded_structure(model, params)


def load(folder: str | Path) -> nn.Module:
    """The model exported to ``folder`` (by ``fedpeft-export``), in eval mode.

    Raises
    ------
    FileNotFoundError
        If ``folder`` has no ``fedpeft_model.json`` or no weights file.
    RuntimeError
        If the weights do not match the described architecture (strict loading).

    """
    folder = Path(folder)
    info = read_info(folder)
    weights = folder / info.weights_file
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no such weights file")
    model = build(info)
    load_model(model, str(weights), strict=True)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()
