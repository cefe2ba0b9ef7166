"""``server.*`` and ``output.*`` run-config sections."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .flat import check, check_choices, key


def _optimizers() -> Any:
    from fedpeft.server_opt import OPTIMIZERS

    return OPTIMIZERS


def _rules() -> Any:
    from fedpeft.aggregation import RULES

    return RULES


def _precisions() -> Any:
    from fedpeft.precision import PRECISIONS

    return PRECISIONS


# The poisoning guard's defaults (server_app/guard.py), from measured honest updates
# (benchmarks/guard.py; docs/RELIABILITY.md).
GUARD_ROUND_FACTOR = 5.0
GUARD_MODEL_FACTOR = 100.0

DEVICE_SPEC = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def check_device(key_: str, spec: str) -> None:
    """The syntax of a ``*.device`` value (:mod:`fedpeft.device` checks that it exists)."""
    check(DEVICE_SPEC.fullmatch(spec) is not None, key_, spec, f"choose one of {DEVICE_CHOICES}")


@dataclass(frozen=True)
class ServerConfig:
    """``server.*``: rounds, client sampling, timeouts, reply limits and aggregation.

    ``lr`` is ``server.lr``; 0 (unset) is resolved by :class:`fedpeft.config.RunConfig`,
    which knows the method, to the default of the optimizer
    :data:`fedpeft.server_opt.OPTIMIZERS` registers as ``server.optimizer``.
    """

    PREFIX: ClassVar[str] = "server."
    num_rounds: int = key(5, "federated rounds")
    fraction_train: float = key(0.5, "fraction of the connected nodes sampled per round")
    clients_per_round: int = key(0, "absolute number of clients per round; 0 = use "
                                 "server.fraction-train")  # fmt: skip
    exclude_partitions: str = key("", 'partition ids never sampled (quarantine), e.g. "0,3"')
    min_train_nodes: int = key(2, "fewest clients sampled per round (and nodes waited for)")
    fraction_evaluate: float = key(
        0.0,
        "fraction of nodes (seeded by round) that also "
        "evaluate the global model each round, with their local "
        "tensors (FedSA-LoRA's B, peft.head.local: personalised), "
        "on their held-out images (data.local-test-fraction)",
    )
    round_timeout: float = key(600.0, "seconds the server waits for a round's replies")
    partition_registry: str = key("", "deployment with SuperNode authentication: a TOML file "
                                  "binding each partition id to a SuperNode's public key "
                                  "file (`0 = \"keys/supernode-1.pub\"`, relative to the "
                                  "file); a node claiming a partition bound to another key, "
                                  "or not listed, is refused and logged. Empty: off")  # fmt: skip
    infer_partitions: bool = key(True, "simulation: each simulated SuperNode's partition id "
                                 "from its registration order (Flower's simulation gives the "
                                 "i-th node partition i), checked against its replies, "
                                 "instead of a query message to every node at start-up "
                                 "(round 1's server.round-timeout then also covers the Ray "
                                 "actors' first ClientApp load); deployed nodes are always "
                                 "asked")  # fmt: skip
    eval_batch_size: int = key(64, "batch size of evaluation (server and clients)")
    evaluate_every: int = key(1, "the server evaluates the global model on the test split "
                              "after every this many rounds, and always before round 1 and "
                              "after the last; the rounds between record no accuracy (NaN) "
                              "and cannot be the best round")  # fmt: skip
    device: str = key("auto", "where the server evaluates the global model (choices as "
                      "train.device; checked at start-up)")  # fmt: skip
    precision: str = key("auto", "autocast dtype of the server's evaluation on server.device "
                         "(choices and `auto` as train.precision's, resolved for the server's "
                         "own device, not the clients')", choices=_precisions)  # fmt: skip
    min_replies: int = key(1, "fewer valid replies: the round fails and the global state "
                           "is unchanged")  # fmt: skip
    max_failed_rounds: int = key(3, "consecutive failed rounds before the run stops")
    aggregation: str = key("fedavg", "how accepted replies are combined (trimmed-mean: "
                           "server.trim-beta; krum, multi-krum: server.krum.*)",
                           choices=_rules)  # fmt: skip
    optimizer: str = key("fedavg", "applies the round's aggregate to the global model "
                         "(Reddi et al. 2021; each as Flower's strategy of that name)",
                         choices=_optimizers)  # fmt: skip
    lr: float = key(0.0, "server learning rate of server.optimizer; 0 = that optimizer's "
                    "default, searched on the default job (docs/RESULTS.md, \"Server-lr "
                    "search\"): fedavg 1 (it ignores it), fedavgm 0.3, fedadam 0.03, "
                    "fedyogi 0.01, fedadagrad 0.01 (0.001 for full, which trains every backbone "
                    "weight); fedavgm at 1 with momentum 0 is plain averaging")  # fmt: skip
    momentum: float = key(0.9, "fedavgm: server momentum")
    beta1: float = key(0.9, "fedadam / fedyogi: first-moment decay")
    beta2: float = key(0.99, "fedadam / fedyogi: second-moment decay")
    tau: float = key(1e-3, "fedadam / fedyogi / fedadagrad: adaptivity ε in the denominator")
    trim_beta: float = key(0.1, "trimmed-mean: fraction cut at each end")
    krum__byzantine: int = key(0, "krum / multi-krum: assumed attackers f (n >= 2f + 3)")
    krum__keep: int = key(0, "multi-krum: updates averaged; 0 = n - f")
    max_payload_bytes: int = key(0, "bytes a reply may carry; 0 = 2x the trainable set's "
                                 "serialised size")  # fmt: skip
    max_num_examples: int = key(0, "largest num-examples a reply may claim; 0 = "
                                "data.train-size when set, else no bound")  # fmt: skip
    max_update_norm: float = key(0.0, "L2 bound on a reply's update (reply - sent); 0 = none")
    guard__round_factor: float = key(GUARD_ROUND_FACTOR, "poisoning guard: with 3 or more "
                                     "valid replies, refuse an update norm over this times "
                                     "their median; 0 = off")  # fmt: skip
    guard__model_factor: float = key(GUARD_MODEL_FACTOR, "poisoning guard: refuse an update "
                                     "norm over this times the global trainable tensors' "
                                     "norm (at least 1); 0 = off")  # fmt: skip

    def __post_init__(self) -> None:
        positive = ("num_rounds", "min_train_nodes", "eval_batch_size", "evaluate_every",
                    "min_replies", "max_failed_rounds")  # fmt: skip
        check_device("server.device", self.device)
        for name in positive:
            value = getattr(self, name)
            check(value >= 1, f"server.{name.replace('_', '-')}", value, "must be >= 1")
        self.excluded()  # validates
        frac = self.fraction_train
        check(0 < frac <= 1, "server.fraction-train", frac, "must be in (0, 1]")
        frac = self.fraction_evaluate
        check(0 <= frac <= 1, "server.fraction-evaluate", frac, "must be in [0, 1]")
        check(self.round_timeout > 0, "server.round-timeout", self.round_timeout, "must be > 0")
        check_choices(self, self.PREFIX)
        check(0 <= self.trim_beta < 0.5, "server.trim-beta", self.trim_beta, "must be in [0, 0.5)")
        check(0 <= self.lr < math.inf, "server.lr", self.lr,
              "must be a finite number > 0, or 0 for server.optimizer's default")  # fmt: skip
        for key_, value in (("server.momentum", self.momentum), ("server.beta1", self.beta1),
                            ("server.beta2", self.beta2)):  # fmt: skip
            check(0 <= value < 1, key_, value, "must be in [0, 1)")
        check(0 < self.tau < math.inf, "server.tau", self.tau, "must be a finite number > 0")
        for key_, value in (
            ("server.clients-per-round", self.clients_per_round),
            ("server.krum.byzantine", self.krum__byzantine),
            ("server.krum.keep", self.krum__keep),
            ("server.max-payload-bytes", self.max_payload_bytes),
            ("server.max-num-examples", self.max_num_examples),
            ("server.max-update-norm", self.max_update_norm),
            ("server.guard.round-factor", self.guard__round_factor),
            ("server.guard.model-factor", self.guard__model_factor),
        ):
            check(value >= 0, key_, value, "must be >= 0 (0 = default/off)")
        rf = self.guard__round_factor
        check(rf == 0 or rf >= 1, "server.guard.round-factor", rf,
              "must be 0 (off) or >= 1 (below 1 it refuses the median reply)")  # fmt: skip
        if self.aggregation in ("krum", "multi-krum"):
            need = 2 * self.krum__byzantine + 3
            check(
                max(self.min_train_nodes, self.clients_per_round) >= need,
                "server.min-train-nodes",
                self.min_train_nodes,
                f"{self.aggregation} with server.krum.byzantine={self.krum__byzantine} needs "
                f"at least 2f + 3 = {need} clients per round",
            )

    def excluded(self) -> frozenset[int]:
        """Partition ids never sampled (``server.exclude-partitions``, e.g. ``"0,3"``)."""
        items = [s.strip() for s in self.exclude_partitions.split(",") if s.strip()]
        check(
            all(s.isdigit() for s in items),
            "server.exclude-partitions",
            self.exclude_partitions,
            "expected comma-separated partition ids, e.g. '0,3'",
        )
        return frozenset(int(s) for s in items)


@dataclass(frozen=True)
class OutputConfig:
    """``output.*``: where results go (``<dir>/<run-name>/``), checkpoints, resume."""

    dir: str = key("outputs", "results folder: each run writes <dir>/<run-name>/")
    run_name: str = key("", "run folder name; empty = <method>-<dataset>-<time>-<run id>")
    checkpoint: bool = key(True, "write <dir>/<run-name>/checkpoint.safetensors after every "
                           "round")  # fmt: skip
    resume: bool = key(False, "continue <dir>/<run-name> from its checkpoint")
    save_every: int = key(0, "also keep every N-th round's trainable tensors as "
                          "<dir>/<run-name>/round_<N>_trainable.safetensors; 0 = off")  # fmt: skip
    tensorboard: bool = key(False, "write TensorBoard event files to <dir>/<run-name>/tb/ "
                            "every round")  # fmt: skip

    def __post_init__(self) -> None:
        check(self.save_every >= 0, "output.save-every", self.save_every, "must be >= 0 (0 = off)")
        check(
            not self.resume or bool(self.run_name),
            "output.resume",
            self.resume,
            "resuming needs output.run-name (the run folder to continue)",
        )
        check(
            not self.resume or self.checkpoint,
            "output.resume",
            self.resume,
            "resuming needs output.checkpoint = true",
        )
