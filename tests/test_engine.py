"""The training engine: devices, mixed precision, the batch pipeline, the feature cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import tiny_vit

from fedpeft import device as device_lib
from fedpeft import features
from fedpeft.config import ConfigError, TrainConfig, parse_run_config
from fedpeft.data.batches import BatchPipeline, crop_flip, flip
from fedpeft.data.tensors import ImageTensors
from fedpeft.engine import make_engine
from fedpeft.training import evaluate, train_local
from peft_strategies import get_method

FP32 = TrainConfig(batch_size=4, precision="fp32")


def _model(method: str = "head", img_size: int = 32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if img_size == 32 and seed == 0:
        model = tiny_vit()
    else:
        import timm

        model = timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=img_size)
    get_method(method).apply(model, get_method(method).config_cls())
    return model


def _data(n: int, size: int = 32, channels: int = 3, seed: int = 0, key: str = "d") -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return ImageTensors(images, torch.randint(0, 10, (n,), generator=g), 10, key)


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as CI sees it: no CUDA device, whatever the host has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device_lib.resolve_device.cache_clear()
    yield
    device_lib.resolve_device.cache_clear()


# -- devices -------------------------------------------------------------------------


def test_explicit_cpu_puts_model_batches_and_outputs_on_it():
    # Prepare: hooks record the device of every input and of the parameters at forward
    model, seen = _model("lora"), []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].device))
    # Execute
    engine = make_engine(model, "cpu", "fp32")
    train_local(model, _data(8), dataclasses.replace(FP32, device="cpu"), 0.01, 1, engine)
    out = evaluate(model, _data(4), 4, engine)
    # Assert
    assert engine.device == torch.device("cpu") and seen
    assert set(seen) == {engine.device}
    assert {p.device for p in model.parameters()} == {engine.device}
    assert 0.0 <= out.accuracy <= 1.0


def test_auto_picks_cuda_when_torch_sees_one(monkeypatch, caplog):
    # Prepare: a fake CUDA device (the check torch offers; nothing is allocated)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    device_lib.resolve_device.cache_clear()
    # Execute
    with caplog.at_level("INFO", logger="fedpeft.device"):
        got = device_lib.resolve_device("auto", "train.device")
    device_lib.resolve_device.cache_clear()
    # Assert: picked and logged
    assert got == torch.device("cuda", 0)
    assert "train.device=auto: computing on cuda:0 (Fake GPU)" in caplog.text


def test_auto_without_a_gpu_is_the_cpu(no_cuda, monkeypatch):
    monkeypatch.setattr(device_lib, "_mps_available", lambda: False)
    assert device_lib.resolve_device("auto", "train.device") == torch.device("cpu")


@pytest.mark.parametrize(("spec", "key"), [("cuda", "train.device"), ("cuda:1", "server.device")])
def test_cuda_without_a_gpu_fails_naming_the_key(no_cuda, spec, key):
    with pytest.raises(ConfigError, match=f"{key}='{spec}': torch cannot use a CUDA device"):
        make_engine(_model(), spec, device_key=key)


def test_a_cuda_index_past_the_visible_devices_fails(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    device_lib.resolve_device.cache_clear()
    with pytest.raises(ConfigError, match=r"train.device='cuda:1': only 1 CUDA device"):
        device_lib.resolve_device("cuda:1", "train.device")
    device_lib.resolve_device.cache_clear()


@pytest.mark.parametrize("key", ["train.device", "server.device"])
def test_a_malformed_device_fails_at_parse_time(key):
    with pytest.raises(ConfigError, match=f"{key}='gpu': choose one of auto, cpu, cuda"):
        parse_run_config({key: "gpu"})


def test_threads_follow_omp_num_threads(monkeypatch):
    # Prepare
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # Execute / Assert: 0 = what the process may use; an explicit number wins
    try:
        assert device_lib.set_threads(0) == 1 and torch.get_num_threads() == 1
        assert device_lib.set_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# -- precision -----------------------------------------------------------------------


def _update(method: str, precision: str) -> torch.Tensor:
    model = _model(method)
    before = _trainable(model)
    train_local(model, _data(16), dataclasses.replace(FP32, precision=precision), 0.05, 3)
    return torch.cat([(p - before[n]).flatten() for n, p in _trainable(model).items()])


@pytest.mark.parametrize("method", ["lora", "adapter", "prompt", "head"])
def test_a_bf16_update_agrees_with_fp32(method):
    # Prepare / Execute: one client's 4 SGD steps on the tiny ViT
    ref, got = _update(method, "fp32"), _update(method, "bf16")
    # Assert: measured 0.006-0.016 relative difference over the methods (bf16 has
    # 8 mantissa bits: ~0.4% per rounding); 0.05 leaves room and fails on any real bug
    assert float((got - ref).norm() / ref.norm()) < 0.05


def test_fp16_scales_the_loss_and_trains_finitely():
    engine = make_engine(_model(), "cpu", "fp16")
    assert engine.precision.scaler().is_enabled()
    assert torch.isfinite(_update("lora", "fp16")).all()


def test_auto_under_local_dp_is_fp32_and_explicit_bf16_is_refused():
    # auto: fp32 for DP-SGD whatever the device offers
    assert make_engine(_model(), "cpu", "auto", private=True).precision.name == "fp32"
    with pytest.raises(ConfigError, match=r"train\.precision='bf16': with dp\.mode='local'"):
        parse_run_config({"dp.mode": "local", "train.precision": "bf16"})
    parse_run_config({"dp.mode": "local", "train.precision": "auto"})  # accepted


# -- batches at the model's size -----------------------------------------------------


def test_stored_greyscale_8px_trains_as_3x32():
    # Prepare: a batch stored as the source holds it (1 channel, 8 px)
    model, shapes = _model("lora"), []
    model.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    # Execute
    train_local(model, _data(8, size=8, channels=1), FP32, 0.01, 1)
    # Assert
    assert shapes == [(4, 3, 32, 32), (4, 3, 32, 32)]


def test_pipeline_resizes_and_standardises_like_pil_within_rounding():
    # Prepare: a smooth 8 px image; PIL's bicubic resize to 32 px is the old path
    from PIL import Image

    ramp = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8) * 4
    pil = Image.fromarray(ramp[0, 0].numpy()).convert("RGB").resize((32, 32), Image.BICUBIC)
    old = torch.tensor(np.asarray(pil)).permute(2, 0, 1)[None].float()
    pipe = BatchPipeline(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), torch.device("cpu"))
    # Execute
    new = pipe(ramp) * 255.0
    # Assert: same size and channels; within a few grey levels (kernel a=-0.75 vs -0.5)
    assert new.shape == (1, 3, 32, 32)
    assert float((new - old).abs().mean()) < 2.0


def test_augmentations_are_seeded_and_keep_the_shape():
    x = _data(16, size=16).images.float()
    a = crop_flip(x, torch.Generator().manual_seed(1))
    b = crop_flip(x, torch.Generator().manual_seed(1))
    f = flip(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b)
    flipped = [torch.equal(f[i], x[i].flip(-1)) for i in range(16)]
    assert any(flipped) and not all(flipped)
    assert all(torch.equal(f[i], x[i]) for i in range(16) if not flipped[i])


def test_an_unknown_augmentation_fails_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.augment='mixup': unknown augmentation"):
        parse_run_config({"train.augment": "mixup"})


# -- frozen features computed once ---------------------------------------------------


def test_cached_head_training_equals_uncached_bit_for_bit():
    # Prepare: two identical head-only models, 2 epochs over 12 images
    cached, plain, data = _model(), _model(), _data(12)
    cfg = dataclasses.replace(FP32, epochs=2)
    # Execute
    a = train_local(cached, data, cfg, 0.1, 5)
    b = train_local(plain, data, dataclasses.replace(cfg, feature_cache=False), 0.1, 5)
    # Assert
    for name, value in _trainable(cached).items():
        assert torch.equal(value, _trainable(plain)[name]), name
    assert (a.loss, a.accuracy) == (b.loss, b.accuracy)


def test_cached_evaluation_equals_the_whole_model():
    model, data = _model(), _data(10, key="test")
    engine = make_engine(model, "cpu", "fp32")
    with torch.inference_mode():
        logits = model.eval()(engine.pipeline(data.images))
        head = model.head(features.cached_features(model, data, engine, 4))
    torch.testing.assert_close(head, logits, atol=1e-5, rtol=0)
    assert (
        evaluate(model, data, 4, engine).accuracy
        == evaluate(model, data, 4, engine, cache=False).accuracy
    )


def test_the_cache_is_keyed_by_model_and_data(monkeypatch):
    # Prepare: count the backbone passes
    calls = []
    real = features.pooled_features
    monkeypatch.setattr(features, "pooled_features",
                        lambda *a, **k: calls.append(a[1].key) or real(*a, **k))  # fmt: skip
    model, other_res = _model(), _model(img_size=16)
    engine, engine16 = make_engine(model, "cpu", "fp32"), make_engine(other_res, "cpu", "fp32")
    part0, part1 = _data(8, key="partition 0"), _data(8, seed=1, key="partition 1")
    # Execute: twice the same, then another partition, another resolution, another backbone
    first = features.cached_features(model, part0, engine, 4)
    again = features.cached_features(model, part0, engine, 4)
    features.cached_features(model, part1, engine, 4)
    small = features.cached_features(other_res, part0, engine16, 4)
    other_backbone = _model(seed=1)
    features.cached_features(other_backbone, part0, make_engine(other_backbone, "cpu", "fp32"), 4)
    # Assert
    assert again is first
    assert calls == ["partition 0", "partition 1", "partition 0", "partition 0"]
    assert not torch.equal(small, first)


def test_no_cache_when_more_than_the_head_trains_or_data_is_unnamed():
    engine = make_engine(_model("lora"), "cpu", "fp32")
    assert features.cached_features(_model("lora"), _data(4), engine, 4) is None
    assert features.cached_features(_model(), _data(4, key=""), engine, 4) is None


def test_augmentation_turns_the_cache_off(monkeypatch):
    calls = []
    monkeypatch.setattr(features, "pooled_features", lambda *a, **k: calls.append(1))
    train_local(_model(), _data(8), dataclasses.replace(FP32, augment="flip"), 0.1, 1)
    assert calls == []
