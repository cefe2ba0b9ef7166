"""FedProx (train.proximal-mu): the proximal term over the trainable tensors, DP-SGD too."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant

from fedpeft.config import TrainConfig
from fedpeft.dp.local import train_private
from fedpeft.training import train_local
from tests.conftest import model_input
from tests.test_dp_local import _data, _model, _trainable

CFG = TrainConfig(
    epochs=2, batch_size=4, momentum=0.9, nesterov=True, weight_decay=1e-4, precision="fp32"
)  # the reference is fp32


def _reference(model, data, cfg: TrainConfig, lr: float, seed: int, mu: float) -> None:
    """FedProx as Li et al. write it: (μ/2)·‖w − w_received‖² added to each batch's loss."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    received = [p.detach().clone() for p in params]
    sgd = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)  # fmt: skip
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = F.cross_entropy(model(model_input(model, data.images[idx])), data.labels[idx])
            loss = loss + mu / 2 * sum(
                ((p - r) ** 2).sum() for p, r in zip(params, received, strict=True)
            )
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()


@pytest.mark.parametrize("method", ["head", "lora"])
def test_mu_zero_is_plain_training_and_mu_positive_equals_the_loss_form(method):
    data = _data(12)
    for mu in (0.0, 0.5):
        # Prepare
        ours, ref = _model(method), _model(method)
        # Execute
        train_local(ours, data, dataclasses.replace(CFG, proximal_mu=mu), 0.05, 3)
        _reference(ref, data, CFG, 0.05, 3, mu)
        # Assert: bit for bit at μ = 0; within float error of the loss form otherwise
        a, b = _trainable(ours), _trainable(ref)
        for name in a:
            if mu == 0:
                assert torch.equal(a[name], b[name]), name
            else:
                torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)


def test_the_proximal_term_pulls_towards_the_received_weights():
    # Prepare
    data, received = _data(12), _trainable(_model("head"))

    def drift(mu: float) -> float:
        model = _model("head")
        train_local(model, data, dataclasses.replace(CFG, proximal_mu=mu), 0.05, 3)
        return float(sum(((v - received[k]) ** 2).sum() for k, v in _trainable(model).items()))

    # Execute / Assert
    assert drift(5.0) < drift(0.0)


def test_dp_sgd_adds_the_term_after_the_noise():
    # Prepare: the same seed, so the same Poisson batches and the same noise
    data, received = _data(16), _trainable(_model("head"))

    def run(mu: float) -> dict[str, torch.Tensor]:
        model = _model("head")
        cfg = dataclasses.replace(CFG, proximal_mu=mu, epochs=1)
        train_private(model, data, cfg, 0.1, 7, noise_multiplier=1.0, clip_norm=1.0,
                      accountant=RDPAccountant())  # fmt: skip
        return _trainable(model)

    # Execute
    plain, prox = run(0.0), run(2.0)  # lr·μ = 0.2: a contraction
    # Assert: μ pulls towards the received weights; μ = 0 twice is bit-identical
    dist = {w: float(sum(((v - received[k]) ** 2).sum() for k, v in run_.items()))
            for w, run_ in (("plain", plain), ("prox", prox))}  # fmt: skip
    assert dist["prox"] < dist["plain"]
    assert all(torch.equal(plain[k], v) for k, v in run(0.0).items())
