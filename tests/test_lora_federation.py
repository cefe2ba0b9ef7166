"""LoRA federation variants (``peft.lora.federation``): what trains and what travels.

FFA-LoRA's real ``flwr run`` (it learns; A never travels) is
``tests/e2e/test_robustness.py``'s run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vit

from fedpeft.arrays import NPY_HEADER_BYTES, to_arrayrecord, trainable_state, wire_bytes
from peft_strategies import get_method
from peft_strategies.base import ViTDims
from peft_strategies.lora import FEDERATIONS, LoraMethodConfig


def _lora(federation: str, seed: int = 0) -> tuple[torch.nn.Module, LoraMethodConfig]:
    model = tiny_vit()
    torch.manual_seed(seed)  # as fedpeft.model.build_model seeds before the method
    cfg = LoraMethodConfig(federation=federation)
    get_method("lora").apply(model, cfg)
    return model, cfg


def test_ffa_trains_and_sends_b_and_the_head_only():
    # Prepare
    model, cfg = _lora("ffa")
    dims = ViTDims.of(tiny_vit())
    # Execute
    sent = trainable_state(model)
    # Assert: every B and the head, no A; the count is the method's formula
    assert not [k for k in sent if ".lora_A." in k]
    lora_b = [n for n, _ in model.named_parameters() if ".lora_B." in n]
    assert set(sent) == set(lora_b) | {"head.weight", "head.bias"}
    assert sum(v.numel() for v in sent.values()) == get_method("lora").num_trainable(dims, cfg)


def test_ffa_sends_three_quarters_of_the_factor_bytes_on_the_fused_qkv():
    # Prepare: the factors alone (the head travels in both), with distinct values so no
    # array is deduplicated on the wire
    def factors(federation: str) -> dict[str, torch.Tensor]:
        model, _ = _lora(federation)
        return {k: torch.randn_like(v) for k, v in trainable_state(model).items()
                if ".lora_" in k}  # fmt: skip

    ffa, fedavg = factors("ffa"), factors("fedavg")
    # Execute
    raw = {name: sum(v.numel() * 4 for v in s.values()) for name, s in
           (("ffa", ffa), ("fedavg", fedavg))}  # fmt: skip
    on_wire = wire_bytes(to_arrayrecord(ffa))
    b_of_fedavg = {k: v for k, v in fedavg.items() if ".lora_B." in k}
    # Assert: B (3·dim × r) is three times A (r × dim), so 75% of the factors' bytes; on
    # the wire exactly what fedavg's B tensors alone take (the per-tensor framing included)
    assert raw["ffa"] / raw["fedavg"] == 0.75
    assert on_wire == wire_bytes(to_arrayrecord(b_of_fedavg))
    assert on_wire - raw["ffa"] >= len(ffa) * NPY_HEADER_BYTES  # the header per tensor


def test_ffa_keeps_a_identical_on_every_client_through_training():
    # Prepare: two clients build from the run's seed
    first, _ = _lora("ffa", seed=42)
    second, _ = _lora("ffa", seed=42)
    a_before = {n: p.detach().clone() for n, p in first.named_parameters() if ".lora_A." in n}
    # Execute: one step on the first client
    opt = torch.optim.SGD([p for p in first.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(first(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    # Assert: A is non-zero, the same on both clients, and unchanged by training
    a_second = {n: p for n, p in second.named_parameters() if ".lora_A." in n}
    assert a_before and all(a.abs().sum() > 0 for a in a_before.values())
    for name, a in first.named_parameters():
        if ".lora_A." in name:
            assert torch.equal(a, a_before[name]) and torch.equal(a, a_second[name]), name


def test_an_unknown_federation_names_the_choices():
    with pytest.raises(ValueError, match=r"federation='fedsa2'.*\['fedavg', 'ffa'\]"):
        LoraMethodConfig(federation="fedsa2")
    assert list(FEDERATIONS) == ["fedavg", "ffa"]
