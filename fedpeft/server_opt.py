"""Server optimizers over the trainable tensors (Reddi et al. 2021, "Adaptive Federated
Optimization"; Hsu et al. 2019 for FedAvgM).

The round's aggregate (FedAvg's weighted mean, a robust rule's output or central DP's
noisy mean) is a proposal; the optimizer sees it and the current global arrays, keeps
its own state (momentum, second moments) and returns the next global arrays. Each
follows Flower's own strategy of the same name (``flwr.serverapp.strategy``) update for
update, so a golden test can compare them; they are re-written here because Flower's
are whole strategies (sampling, aggregation and the update in one ``aggregate_train``)
and ours must apply after our validation and rules. ``server.optimizer`` names one of
:data:`OPTIMIZERS`; adding one is a class registered here, with its ``default_lr``: the
``server.lr`` a run gets when it sets none (docs/RESULTS.md, "Server-lr search").
"""  # noqa: D205

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .arrays import Arrays
from .registry import Registry


@dataclass(frozen=True)
class OptParams:
    """``server.lr``, ``server.momentum``, ``server.beta1``, ``server.beta2``, ``server.tau``."""

    lr: float = 1.0
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3


class ServerOptimizer:
    """Turns the round's aggregate into the next global arrays; keeps its own state.

    The state is named arrays (``<slot>/<tensor key>``), checkpointed in the safetensors
    body, so a resumed run continues bit-identically.
    """

    slots: ClassVar[tuple[str, ...]] = ()
    # server.lr when the run config leaves it at 0: each subclass declares its own, from
    # the search on the default job (docs/RESULTS.md, "Server-lr search")
    default_lr: ClassVar[float]
    # ... and on a method that trains every backbone weight, where it may differ (None:
    # default_lr): there each coordinate's update is small, so a step scaled by its root
    # mean square is large next to it
    default_lr_backbone: ClassVar[float | None] = None

    def __init__(self, params: OptParams) -> None:
        self.params = params
        self.moments: dict[str, Arrays] = {}

    @classmethod
    def default_lr_for(cls, trains_backbone: bool) -> float:
        """The ``server.lr`` of a run that sets none, for a method that does (not) train
        every backbone weight.
        """  # noqa: D205
        if trains_backbone and cls.default_lr_backbone is not None:
            return cls.default_lr_backbone
        return cls.default_lr

    def step(self, server_round: int, current: Arrays, aggregate: Arrays) -> Arrays:
        """The next global arrays (in ``current``'s dtypes)."""
        new = self._step(server_round, current, aggregate)
        return {k: np.ascontiguousarray(v, dtype=current[k].dtype) for k, v in new.items()}

    def _step(self, server_round: int, current: Arrays, aggregate: Arrays) -> Arrays:
        return dict(aggregate)

    def state(self) -> Arrays:
        """The optimizer's state as named arrays (empty before its first step)."""
        return {
            f"{slot}/{k}": v for slot, arrays in self.moments.items() for k, v in arrays.items()
        }

    def load_state(self, state: Arrays) -> None:
        """Restore :meth:`state`; an unknown slot raises ``ValueError``."""
        self.moments = {}
        for name, value in state.items():
            slot, _, key = name.partition("/")
            if slot not in self.slots:
                raise ValueError(f"server optimizer state {name!r}: unknown slot {slot!r}")
            self.moments.setdefault(slot, {})[key] = np.array(value)


OPTIMIZERS: Registry[type[ServerOptimizer]] = Registry("server optimizer")


@OPTIMIZERS.register("fedavg")
class FedAvg(ServerOptimizer):
    """The aggregate is the next global model (plain FedAvg)."""

    default_lr = 1.0  # unused: no server step


@OPTIMIZERS.register("fedavgm")
class FedAvgM(ServerOptimizer):
    """Server SGD with momentum on the pseudo-gradient ``current - aggregate`` (Flower's)."""

    slots = ("momentum",)
    default_lr = 0.3  # Flower's 1.0 ends LoRA and head below FedAvg (RESULTS.md)

    def _step(self, server_round: int, current: Arrays, aggregate: Arrays) -> Arrays:
        lr, beta = self.params.lr, self.params.momentum
        grad = {k: current[k] - aggregate[k] for k in current}
        if beta > 0.0:
            if "momentum" not in self.moments:  # Flower starts the buffer at the first gradient
                self.moments["momentum"] = grad
            else:
                self.moments["momentum"] = {
                    k: beta * v + grad[k] for k, v in self.moments["momentum"].items()
                }
            grad = self.moments["momentum"]
        return {k: current[k] - lr * grad[k] for k in current}


class _Adaptive(ServerOptimizer):
    """FedOpt: first moment of ``delta = aggregate - current`` and an adaptive second one."""

    slots = ("m", "v")
    beta1_used: ClassVar[bool] = True

    def _moments(self, current: Arrays, aggregate: Arrays) -> tuple[Arrays, Arrays]:
        beta1 = self.params.beta1 if self.beta1_used else 0.0
        delta = {k: aggregate[k] - current[k] for k in current}
        m = self.moments.get("m") or {k: np.zeros_like(v) for k, v in delta.items()}
        self.moments["m"] = {k: beta1 * v + (1 - beta1) * delta[k] for k, v in m.items()}
        v = self.moments.get("v") or {k: np.zeros_like(x) for k, x in delta.items()}
        self.moments["v"] = self._second(v, delta)
        return self.moments["m"], self.moments["v"]

    def _second(self, v: Arrays, delta: Arrays) -> Arrays:
        raise NotImplementedError

    def _eta(self, server_round: int) -> float:
        return self.params.lr

    def _step(self, server_round: int, current: Arrays, aggregate: Arrays) -> Arrays:
        m, v = self._moments(current, aggregate)
        eta, tau = self._eta(server_round), self.params.tau
        return {k: x + eta * m[k] / (np.sqrt(v[k]) + tau) for k, x in current.items()}


@OPTIMIZERS.register("fedadam")
class FedAdam(_Adaptive):
    """Adam on the pseudo-gradient, bias-corrected step size as Flower's FedAdam."""

    default_lr = 0.03  # Flower's 0.1 diverges LoRA (RESULTS.md)

    def _second(self, v: Arrays, delta: Arrays) -> Arrays:
        beta2 = self.params.beta2
        return {k: beta2 * x + (1 - beta2) * delta[k] ** 2 for k, x in v.items()}

    def _eta(self, server_round: int) -> float:
        b1, b2 = self.params.beta1, self.params.beta2
        return float(
            self.params.lr * np.sqrt(1 - np.power(b2, server_round + 1.0))
            / (1 - np.power(b1, server_round + 1.0))
        )  # fmt: skip


@OPTIMIZERS.register("fedyogi")
class FedYogi(_Adaptive):
    """Yogi's additive second-moment update."""

    default_lr = 0.01  # Flower's; 0.03 ends LoRA at 0.58 (RESULTS.md)

    def _second(self, v: Arrays, delta: Arrays) -> Arrays:
        beta2 = self.params.beta2
        return {k: x - (1.0 - beta2) * delta[k] ** 2 * np.sign(x - delta[k] ** 2)
                for k, x in v.items()}  # fmt: skip


@OPTIMIZERS.register("fedadagrad")
class FedAdagrad(_Adaptive):
    """Adagrad's accumulated squares; no first-moment momentum (as Flower's FedAdagrad)."""

    beta1_used = False
    default_lr = 0.01  # Flower's 0.1 diverges LoRA in round 1 (RESULTS.md)
    # Full fine-tuning: 0.01 falls back to chance after round 1, 0.003 swings and trails
    # 0.001 (RESULTS.md).
    # Its round-1 step is lr·Δ/(|Δ| + tau): about (lr / tau)·Δ where |Δ| << tau, as on
    # most pretrained weights, i.e. FedAvg with a server lr of 10 at 0.01.
    default_lr_backbone = 0.001

    def _second(self, v: Arrays, delta: Arrays) -> Arrays:
        return {k: x + delta[k] ** 2 for k, x in v.items()}


def make_optimizer(name: str, params: OptParams) -> ServerOptimizer:
    """The optimizer ``server.optimizer`` names."""
    return OPTIMIZERS.get(name, "server.optimizer")(params)
