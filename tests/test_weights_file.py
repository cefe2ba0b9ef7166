"""A device's local weights file gives exactly the server's 'offline' backbone."""

from __future__ import annotations

import torch

from fedpeft.backbones import create_backbone
from fedpeft.config import ModelConfig
from fedpeft.tools.deploy.weights import export_offline_backbone


def test_exported_file_equals_offline_weights_after_resampling(tmp_path):
    # Prepare: the file devices get (python -m fedpeft.tools.deploy.weights)
    path = export_offline_backbone(tmp_path / "backbone.safetensors")
    name = "vit_small_patch14_dinov2"
    # Execute: 28 px resamples the 37×37 position grid to 2×2
    torch.manual_seed(0)
    offline = create_backbone(ModelConfig(name, "offline", 28), 10).state_dict()
    torch.manual_seed(0)
    from_file = create_backbone(ModelConfig(name, str(path), 28), 10).state_dict()
    # Assert: every frozen tensor identical (the head is new but seeded alike)
    assert offline.keys() == from_file.keys()
    different = [k for k in offline if not torch.equal(offline[k], from_file[k])]
    assert different == []
