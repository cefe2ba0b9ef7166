"""Opacus per-sample gradients of every PEFT method vs micro-batch ground truth.

As Opacus's own tests do: the per-sample gradients that GradSampleModule
computes for a batch must equal the gradients of each example's loss computed
alone. The adapter (shared across blocks and per block) and the deep prompts
(with prompt dropout) are this project's own modules.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vit
from opacus import GradSampleModule

from fedpeft.dp.grad_samplers import SharedAwareGradSampleModule
from peft_strategies import get_method

B = 3
CASES = [
    ("adapter", {"shared": True}),
    ("adapter", {"shared": False}),
    ("prompt", {"dropout": 0.0}),
    ("prompt", {"dropout": 0.5}),
    ("lora", {}),
    ("bias", {}),
    ("head", {}),
    ("full", {}),
]


def _model(name: str, params: dict) -> torch.nn.Module:
    model = tiny_vit()
    method = get_method(name)
    method.apply(model, method.config_cls(**params))
    torch.manual_seed(1)
    with torch.no_grad():  # leave zero-initialised adapter/LoRA weights: gradients non-trivial
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model


def _per_sample(cls, model, x, y) -> dict[str, torch.Tensor]:
    gsm = cls(model, batch_first=True, loss_reduction="mean")
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    F.cross_entropy(gsm(x), y).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    got = {n: p.grad_sample.detach().clone() for n, p in trainable}
    gsm._close()
    return got


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_per_sample_grads_match_micro_batches(name, params):
    # Prepare
    model = _model(name, params)
    torch.manual_seed(2)
    x, y = torch.randn(B, 3, 32, 32), torch.randint(0, 10, (B,))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    expected = {n: [] for n in trainable}
    model.train()
    for i in range(B):  # ground truth: each example alone, same dropout masks (same seed)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in trainable.items():
            expected[n].append(p.grad.detach().clone())
    # Execute
    got = _per_sample(SharedAwareGradSampleModule, model, x, y)
    # Assert
    assert set(got) == set(trainable)
    for n in trainable:
        truth = torch.stack(expected[n])
        assert got[n].shape == truth.shape, n
        # float32 sums over a batch vs one example: agreement to 1e-5 absolute / 1e-4 relative
        torch.testing.assert_close(got[n], truth, atol=1e-5, rtol=1e-4, msg=n)
        assert truth.abs().sum() > 0, f"{n}: trivial (zero) gradient, test would prove nothing"


def test_plain_opacus_overcounts_a_shared_adapter():
    # Why SharedAwareGradSampleModule exists. Baseline: our module on the same batch.
    # Prepare
    model = _model("adapter", {"shared": True})
    torch.manual_seed(2)
    x, y = torch.randn(B, 3, 32, 32), torch.randint(0, 10, (B,))
    ours = _per_sample(SharedAwareGradSampleModule, model, x, y)
    # Execute
    plain = _per_sample(GradSampleModule, model, x, y)
    # Assert: Opacus 1.6 hooks the shared adapter once per block, so depth times too large
    depth = len(model.blocks)
    key = "blocks.0.mlp.adapter.up.bias"
    torch.testing.assert_close(plain[key], depth * ours[key], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(plain["head.bias"], ours["head.bias"])
