"""The run config, parsed once into frozen dataclasses and validated.

Keys are kebab-case with dotted namespaces (``peft.lora.r``), as in
``[tool.flwr.app.config]``. :func:`parse_run_config` is the only reader of the
raw run config; everything downstream takes :class:`RunConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.common.config import flatten_dict

from .config_dp import DpConfig
from .config_server import OutputConfig, ServerConfig
from .faults import FaultConfig
from .flatconfig import ConfigError, check, from_flat, known_keys

BUILTIN_DATASETS = ("fashion-mnist", "digits")
DATA_SOURCES = ("builtin", "hub", "folder", "parquet")
PARTITIONERS = ("iid", "dirichlet", "shard")


@dataclass(frozen=True)
class ModelConfig:
    """``model.*``: timm name, weight source and input resolution."""

    name: str = "vit_small_patch14_dinov2"
    weights: str = "offline"
    img_size: int = 112

    def __post_init__(self) -> None:
        check(bool(self.name), "model.name", self.name, "must not be empty")
        check(
            bool(self.weights),
            "model.weights",
            self.weights,
            "use 'hub', 'offline', 'random' or a path to a weights file",
        )
        check(self.img_size >= 8, "model.img-size", self.img_size, "must be >= 8")


@dataclass(frozen=True)
class DataConfig:
    """``data.*``: dataset source, partitioning and subsampling."""

    source: str = "builtin"
    dataset: str = "fashion-mnist"
    image_column: str = ""
    label_column: str = ""
    test_split: str = "test"
    partitioner: str = "iid"
    train_size: int = 2000
    test_size: int = 1000
    dirichlet__alpha: float = 0.5
    dirichlet__min_partition_size: int = 10
    shard__classes_per_client: int = 2

    def __post_init__(self) -> None:
        check(
            self.source in DATA_SOURCES,
            "data.source",
            self.source,
            f"unknown data source; choose one of {list(DATA_SOURCES)}",
        )
        if self.source == "builtin":
            check(
                self.dataset in BUILTIN_DATASETS,
                "data.dataset",
                self.dataset,
                f"unknown built-in dataset; choose one of {list(BUILTIN_DATASETS)}"
                " or set data.source to 'hub', 'folder' or 'parquet'",
            )
        check(bool(self.dataset), "data.dataset", self.dataset, "must not be empty")
        check(
            self.partitioner in PARTITIONERS,
            "data.partitioner",
            self.partitioner,
            f"unknown partitioner; choose one of {list(PARTITIONERS)}",
        )
        check(self.train_size >= 0, "data.train-size", self.train_size, "must be >= 0 (0 = all)")
        check(self.test_size >= 0, "data.test-size", self.test_size, "must be >= 0 (0 = all)")
        check(
            self.dirichlet__alpha > 0,
            "data.dirichlet.alpha",
            self.dirichlet__alpha,
            "the Dirichlet concentration must be > 0",
        )
        check(
            self.dirichlet__min_partition_size >= 0,
            "data.dirichlet.min-partition-size",
            self.dirichlet__min_partition_size,
            "must be >= 0",
        )
        check(
            self.shard__classes_per_client >= 1,
            "data.shard.classes-per-client",
            self.shard__classes_per_client,
            "must be >= 1",
        )


@dataclass(frozen=True)
class TrainConfig:
    """``train.*``: local SGD on each client."""

    epochs: int = 1
    batch_size: int = 32
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train.epochs", self.epochs, "must be >= 1")
        check(self.batch_size >= 1, "train.batch-size", self.batch_size, "must be >= 1")
        check(0 <= self.momentum < 1, "train.momentum", self.momentum, "must be in [0, 1)")
        check(
            not self.nesterov or self.momentum > 0,
            "train.nesterov",
            self.nesterov,
            "Nesterov momentum needs train.momentum > 0",
        )
        check(self.weight_decay >= 0, "train.weight-decay", self.weight_decay, "must be >= 0")


@dataclass(frozen=True)
class PeftConfig:
    """``peft.method`` and the selected method's ``peft.<method>.*`` values."""

    method: str
    params: Any = field(compare=True)


@dataclass(frozen=True)
class RunConfig:
    """The whole run config."""

    seed: int
    model: ModelConfig
    peft: PeftConfig
    data: DataConfig
    train: TrainConfig
    server: ServerConfig
    output: OutputConfig
    fault: FaultConfig = field(default_factory=FaultConfig)
    dp: DpConfig = field(default_factory=DpConfig)

    @property
    def lr(self) -> float:
        """Learning rate of the selected PEFT method."""
        return float(self.peft.params.lr)


_SECTIONS: dict[str, type] = {
    "model.": ModelConfig,
    "data.": DataConfig,
    "train.": TrainConfig,
    "server.": ServerConfig,
    "output.": OutputConfig,
    "fault.": FaultConfig,
    "dp.": DpConfig,
}


def parse_run_config(run_config: dict[str, Any]) -> RunConfig:
    """Parse and validate a (flat or nested) run config.

    Raises
    ------
    ConfigError
        On an unknown key or an invalid value; the message names the key, the
        value and, for choices, the valid options.

    """
    from peft_strategies import get_method, method_names

    flat = flatten_dict(dict(run_config))
    known = {"seed", "peft.method"}
    try:
        sections = {p: from_flat(cls, p, flat) for p, cls in _SECTIONS.items()}
        for prefix, cls in _SECTIONS.items():
            known |= known_keys(cls, prefix)
        method_name = flat.get("peft.method", "lora")
        get_method(str(method_name))  # raises for an unknown method, listing the valid ones
        params = None
        for name in method_names():
            cls = get_method(name).config_cls
            try:
                parsed = from_flat(cls, f"peft.{name}.", flat)
            except ConfigError:
                raise
            except ValueError as exc:  # the method's own validation
                raise ConfigError(f"peft.{name}.{exc}") from exc
            known |= known_keys(cls, f"peft.{name}.")
            if name == method_name:
                params = parsed
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"unknown run-config key(s) {unknown}; valid keys: {sorted(known)}")
    seed = flat.get("seed", 42)
    check(isinstance(seed, int) and not isinstance(seed, bool), "seed", seed, "expected an integer")
    dp, server = sections["dp."], sections["server."]
    check(
        dp.mode != "local" or not sections["output."].resume,
        "output.resume",
        True,
        "resuming a local-DP run would restart every client's privacy accountant "
        "(Context.state does not outlive a run), under-reporting ε; not supported",
    )
    check(
        dp.mode != "central" or server.aggregation == "fedavg",
        "server.aggregation",
        server.aggregation,
        "central DP (dp.mode='central') bounds the sensitivity of the mean only; use 'fedavg'",
    )
    return RunConfig(
        seed=seed,
        model=sections["model."],
        peft=PeftConfig(method=method_name, params=params),
        data=sections["data."],
        train=sections["train."],
        server=sections["server."],
        output=sections["output."],
        fault=sections["fault."],
        dp=dp,
    )
