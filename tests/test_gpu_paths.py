"""What the GPU path decides, checked on the CPU: precision per device capability, the
current device and TF32, a GPU that torch cannot use, memory given back after a round,
and fp16's loss scale kept per client. ``benchmarks/gpu_check.sh`` runs it on a GPU.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref

import pytest
import torch
from conftest import tiny_vit
from flwr.app import RecordDict
from opacus.accountants import RDPAccountant

from fedpeft import device as device_lib
from fedpeft import precision as precision_lib
from fedpeft import training
from fedpeft.config import TrainConfig
from fedpeft.data.tensors import ImageTensors
from fedpeft.dp import local as dp_local
from fedpeft.engine import make_engine
from peft_strategies import get_method


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch sees two CUDA devices (nothing is allocated); the calls made are recorded."""
    calls: dict[str, list] = {"capability": [], "set_device": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "set_device", calls["set_device"].append)
    # TF32 flags are process-wide: put back what they were
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [f.fp32_precision for f in flags]
    device_lib.resolve_device.cache_clear()
    yield calls
    device_lib.resolve_device.cache_clear()
    for f, value in zip(flags, before, strict=True):
        f.fp32_precision = value


def _capability(monkeypatch, calls, by_index: dict[int, tuple[int, int]]) -> None:
    def capability(device):
        calls["capability"].append(torch.device(device).index)
        return by_index[torch.device(device).index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)


# -- precision per device ------------------------------------------------------------


@pytest.mark.parametrize(
    ("capability", "expected"),
    # V100, T4, A100, H100
    [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")],
)
def test_auto_picks_bf16_only_where_the_gpu_computes_it(fake_cuda, monkeypatch, capability,
                                                         expected):  # fmt: skip
    # Prepare: cuda:1 has the capability under test, cuda:0 (the current one) the other kind
    other = (9, 0) if capability < (8, 0) else (7, 5)
    _capability(monkeypatch, fake_cuda, {0: other, 1: capability})
    # torch's own check counts emulated bf16 and asks the current GPU: it must not decide
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    # Execute
    got = precision_lib.resolve_precision("auto", torch.device("cuda", 1))
    # Assert
    assert got.name == expected
    assert fake_cuda["capability"] == [1]


def test_cuda_becomes_the_current_device_with_tf32(fake_cuda):
    # Execute
    got = device_lib.resolve_device("cuda:1", "train.device")
    # Assert
    assert got == torch.device("cuda", 1)
    assert fake_cuda["set_device"] == [1]
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"


def test_auto_warns_when_an_assigned_gpu_is_unusable(monkeypatch, caplog):
    # Prepare: Ray assigned GPU 3, but torch cannot initialise CUDA (an old driver, say)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_lib, "_mps_available", lambda: False)

    def init():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040)")

    monkeypatch.setattr(torch.cuda, "init", init)
    device_lib.resolve_device.cache_clear()
    # Execute
    with caplog.at_level("WARNING", logger="fedpeft.device"):
        got = device_lib.resolve_device("auto", "train.device")
    device_lib.resolve_device.cache_clear()
    # Assert: the CPU, with the key, the GPU and torch's reason in the warning
    assert got == torch.device("cpu")
    assert "train.device=auto: GPU(s) 3 were assigned" in caplog.text
    assert "driver on your system is too old" in caplog.text


@pytest.mark.parametrize("visible", ["", "-1"])
def test_no_warning_when_no_gpu_was_assigned(monkeypatch, caplog, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)  # what Ray sets for 0 GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device_lib.resolve_device.cache_clear()
    with caplog.at_level("WARNING", logger="fedpeft.device"):
        device_lib.resolve_device("auto", "train.device")
    device_lib.resolve_device.cache_clear()
    assert caplog.text == ""


@pytest.mark.parametrize(("native", "warned"), [(False, True), (True, False)])
def test_explicit_bf16_on_a_cpu_without_native_bf16_warns_naming_the_key(
    monkeypatch, caplog, native, warned
):
    # Prepare: either kind of CPU, whichever this machine is
    monkeypatch.setattr(precision_lib, "native_bf16", lambda device: native)
    monkeypatch.setattr(precision_lib, "_warned", set())
    # Execute: twice, as every message of a worker resolves it
    with caplog.at_level("WARNING", logger="fedpeft.precision"):
        for _ in range(2):
            got = precision_lib.resolve_precision("bf16", torch.device("cpu"),
                                                  key="server.precision")  # fmt: skip
    # Assert: still bf16 (the user asked for it), warned once
    assert got.name == "bf16"
    assert caplog.text.count("server.precision='bf16' on a CPU without native bf16") == int(warned)


def test_auto_on_a_cpu_without_native_bf16_is_fp32(monkeypatch, caplog):
    monkeypatch.setattr(precision_lib, "native_bf16", lambda device: False)
    with caplog.at_level("WARNING", logger="fedpeft.precision"):
        got = precision_lib.resolve_precision("auto", torch.device("cpu"))
    assert got.name == "fp32" and caplog.text == ""


# -- what a client's round leaves behind ---------------------------------------------


def _lora_model() -> torch.nn.Module:
    model = tiny_vit()
    get_method("lora").apply(model, get_method("lora").config_cls())
    return model


def _data(n: int = 16) -> ImageTensors:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageTensors(images, torch.randint(0, 10, (n,), generator=g), 10, "")


def _spy_optimizers(monkeypatch) -> list[weakref.ref]:
    """Weak references to every SGD optimizer the round makes and to its momentum."""
    refs: list[weakref.ref] = []
    real_sgd = training.sgd

    def sgd(params, cfg, lr):
        opt = real_sgd(params, cfg, lr)
        refs.append(weakref.ref(opt))
        real_step = opt.step

        def step(*args, **kwargs):
            out = real_step(*args, **kwargs)
            refs.extend(weakref.ref(s["momentum_buffer"]) for s in opt.state.values())
            return out

        opt.step = step
        return opt

    monkeypatch.setattr(training, "sgd", sgd)
    monkeypatch.setattr(dp_local, "sgd", sgd)
    return refs


def _spy_release(monkeypatch, module, model, refs) -> list[dict]:
    """What is still alive when ``module`` gives the device's cached blocks back."""
    seen: list[dict] = []

    def release(device):
        gc.collect()
        seen.append({
            "tensors": [r for r in refs if isinstance(r(), torch.Tensor)],
            "grads": [n for n, p in model.named_parameters() if p.grad is not None],
            "per_sample": [n for n, p in model.named_parameters()
                           if getattr(p, "grad_sample", None) is not None],
        })  # fmt: skip

    monkeypatch.setattr(module, "release", release)
    return seen


def test_a_round_frees_gradients_momentum_and_proximal_copies_before_release(monkeypatch):
    # Prepare: momentum and FedProx on, so both keep tensors during the round
    refs = _spy_optimizers(monkeypatch)
    model = _lora_model()
    seen = _spy_release(monkeypatch, training, model, refs)
    proximal: list[weakref.ref] = []
    real_start = training.proximal_start

    def proximal_start(params, mu):
        copies = real_start(params, mu)
        proximal.extend(weakref.ref(c) for c in copies)
        return copies

    monkeypatch.setattr(training, "proximal_start", proximal_start)
    cfg = TrainConfig(batch_size=4, precision="fp32", momentum=0.9, proximal_mu=0.1)
    # Execute
    training.train_local(model, _data(), cfg, 0.05, 1)
    # Assert: when the cached blocks are given back, nothing of the round holds memory:
    # no momentum buffer, no gradient, no FedProx copy (the optimizer object may still be
    # referenced by the frame; its tensors are what the GPU's blocks hold)
    assert len(refs) > 1 and proximal, "the round made no optimizer or took no step"
    assert seen == [{"tensors": [], "grads": [], "per_sample": []}]
    assert [r for r in proximal if r() is not None] == []


def test_a_private_round_frees_per_sample_state_before_release(monkeypatch):
    # Prepare
    refs = _spy_optimizers(monkeypatch)
    model = _lora_model()
    seen = _spy_release(monkeypatch, dp_local, model, refs)
    cfg = TrainConfig(batch_size=4, precision="fp32", momentum=0.9, proximal_mu=0.1)
    # Execute
    dp_local.train_private(model, _data(), cfg, 0.05, 1, noise_multiplier=1.0, clip_norm=1.0,
                           accountant=RDPAccountant())  # fmt: skip
    # Assert
    assert len(refs) > 1
    assert seen == [{"tensors": [], "grads": [], "per_sample": []}]
    assert not any(hasattr(p, "summed_grad") for p in model.parameters())


# -- fp16's loss scale, kept per client ----------------------------------------------


def test_fp16_loss_scale_carries_over_to_the_clients_next_round():
    # Prepare: fp16 on the CPU (the same GradScaler code as on a GPU)
    model = _lora_model()
    engine = make_engine(model, "cpu", "fp16")
    cfg = dataclasses.replace(TrainConfig(batch_size=4), precision="fp16")
    state = RecordDict()
    # Execute: two rounds of one client, the scale kept in its Context.state between them
    first = precision_lib.kept_scaler(engine.precision, state)
    training.train_local(model, _data(), cfg, 0.01, 1, engine, first)
    precision_lib.keep_scale(first, state)
    second = precision_lib.kept_scaler(engine.precision, state)
    # Assert: the first starts at GradScaler's default, the second where the first ended
    assert first.is_enabled()
    assert second.get_scale() == first.get_scale() == state["loss-scale"]["scale"]
    assert precision_lib.kept_scaler(engine.precision, RecordDict()).get_scale() == 2.0**16


def test_no_loss_scale_is_kept_outside_fp16():
    state = RecordDict()
    scaler = precision_lib.kept_scaler(make_engine(_lora_model(), "cpu", "fp32").precision, state)
    precision_lib.keep_scale(scaler, state)
    assert not scaler.is_enabled() and "loss-scale" not in state
