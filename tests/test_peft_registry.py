"""Every registered PEFT method: counts, frozen weights, round-trips, head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vit

from fedpeft.arrays import load_trainable, to_arrayrecord, trainable_state
from peft_strategies import count_trainable, get_method, method_names, register
from peft_strategies.base import PeftMethod, ViTDims

METHODS = method_names()


def _apply(name: str):
    model = tiny_vit()
    dims = ViTDims.of(model)
    method = get_method(name)
    cfg = method.config_cls()
    method.apply(model, cfg)
    return model, dims, method, cfg


def test_registry_has_the_six_methods():
    assert sorted(METHODS) == ["adapter", "bias", "full", "head", "lora", "prompt"]


def test_registry_rejects_duplicates():
    # Prepare
    class Dup(PeftMethod):
        name = "lora"

        def apply(self, model, cfg):
            return model

        def num_trainable(self, dims, cfg):
            return 0

    # Execute / Assert
    with pytest.raises(ValueError, match="already registered"):
        register(Dup)


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match=r"peft.method='nope'.*lora"):
        get_method("nope")


@pytest.mark.parametrize("name", METHODS)
def test_trainable_count_matches_formula(name):
    # Prepare / Execute
    model, dims, method, cfg = _apply(name)
    # Assert
    n = count_trainable(model)
    assert n > 0
    assert n == method.num_trainable(dims, cfg)
    if name != "full":
        assert n < dims.num_params


@pytest.mark.parametrize("name", METHODS)
def test_head_is_trainable(name):
    model, *_ = _apply(name)
    assert all(p.requires_grad for p in model.get_classifier().parameters())


@pytest.mark.parametrize("name", METHODS)
def test_frozen_weights_unchanged_after_a_step(name):
    # Prepare
    model, *_ = _apply(name)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    # Execute: two steps so zero-initialised factors (LoRA B, adapter up) move too
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    # Assert
    after = dict(model.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(after[n], before), f"frozen {n} changed"
    moved = [n for n, before in trainable.items() if not torch.equal(after[n], before)]
    assert set(moved) == set(trainable), f"not updated: {set(trainable) - set(moved)}"


@pytest.mark.parametrize("name", METHODS)
def test_trainable_state_round_trips_through_arrayrecord(name):
    # Prepare
    model, *_ = _apply(name)
    state = {k: v + 0.25 for k, v in trainable_state(model).items()}
    record = to_arrayrecord(state)
    other, *_ = _apply(name)
    # Execute
    load_trainable(other, record)
    # Assert
    assert set(record) == set(trainable_state(model))
    for k, v in trainable_state(other).items():
        assert torch.equal(v, state[k])


@pytest.mark.parametrize("name", METHODS)
def test_load_trainable_rejects_wrong_keys(name):
    model, *_ = _apply(name)
    state = trainable_state(model)
    state["not.a.param"] = torch.zeros(1)
    with pytest.raises(ValueError, match="extra"):
        load_trainable(model, to_arrayrecord(state))


def test_prompt_tokens_do_not_leak_into_output_tokens():
    model, *_ = _apply("prompt")
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    base = tiny_vit()
    assert feats.shape == base.forward_features(torch.randn(2, 3, 32, 32)).shape


def test_adapter_per_block_variant_counts():
    model = tiny_vit()
    dims = ViTDims.of(model)
    method = get_method("adapter")
    cfg = method.config_cls(shared=False, reduction=4)
    method.apply(model, cfg)
    assert count_trainable(model) == method.num_trainable(dims, cfg)
    assert count_trainable(model) > dims.head_params


def test_zero_init_adapter_and_lora_keep_pretrained_function():
    base = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    base.eval()
    expected = base(x)
    for name in ("adapter", "lora"):
        model, *_ = _apply(name)
        model.eval()
        assert torch.allclose(model(x), expected, atol=1e-6), name
