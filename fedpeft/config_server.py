"""``server.*`` and ``output.*`` run-config sections."""

from __future__ import annotations

from dataclasses import dataclass

from .flatconfig import check

AGGREGATIONS = ("fedavg", "median", "trimmed-mean", "krum", "multi-krum")


@dataclass(frozen=True)
class ServerConfig:
    """``server.*``: rounds, client sampling, timeouts, reply limits and aggregation."""

    num_rounds: int = 3
    fraction_train: float = 1.0
    clients_per_round: int = 0
    exclude_partitions: str = ""
    min_train_nodes: int = 2
    fraction_evaluate: float = 0.0
    round_timeout: float = 600.0
    eval_batch_size: int = 64
    min_replies: int = 1
    max_failed_rounds: int = 3
    aggregation: str = "fedavg"
    trim_beta: float = 0.1
    krum__byzantine: int = 0
    krum__keep: int = 0
    max_payload_bytes: int = 0
    max_num_examples: int = 0
    max_update_norm: float = 0.0

    def __post_init__(self) -> None:
        positive = ("num_rounds", "min_train_nodes", "eval_batch_size", "min_replies",
                    "max_failed_rounds")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            check(value >= 1, f"server.{name.replace('_', '-')}", value, "must be >= 1")
        self.excluded()  # validates
        frac = self.fraction_train
        check(0 < frac <= 1, "server.fraction-train", frac, "must be in (0, 1]")
        frac = self.fraction_evaluate
        check(0 <= frac <= 1, "server.fraction-evaluate", frac, "must be in [0, 1]")
        check(self.round_timeout > 0, "server.round-timeout", self.round_timeout, "must be > 0")
        check(
            self.aggregation in AGGREGATIONS,
            "server.aggregation",
            self.aggregation,
            f"valid choices: {list(AGGREGATIONS)}",
        )
        check(0 <= self.trim_beta < 0.5, "server.trim-beta", self.trim_beta, "must be in [0, 0.5)")
        for key, value in (
            ("server.clients-per-round", self.clients_per_round),
            ("server.krum.byzantine", self.krum__byzantine),
            ("server.krum.keep", self.krum__keep),
            ("server.max-payload-bytes", self.max_payload_bytes),
            ("server.max-num-examples", self.max_num_examples),
            ("server.max-update-norm", self.max_update_norm),
        ):
            check(value >= 0, key, value, "must be >= 0 (0 = default/off)")
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

    dir: str = "outputs"
    run_name: str = ""
    checkpoint: bool = True
    resume: bool = False

    def __post_init__(self) -> None:
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
