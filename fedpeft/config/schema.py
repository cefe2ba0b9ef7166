"""The run config's schema: one frozen dataclass per ``[tool.flwr.app.config]`` namespace.

Keys are kebab-case with dotted namespaces (``peft.lora.r``); each field below
declares its key's default and meaning once (:func:`~fedpeft.config.flat.key`),
and pyproject.toml's defaults are checked against them by a test. Choices that
name an implementation are checked against the registry that implements them.
:func:`~fedpeft.config.parse.parse_run_config` is the only reader of the raw
run config; everything downstream takes :class:`RunConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from .comm import CommConfig
from .dp import DpConfig
from .fault import FaultConfig
from .flat import check, check_choices, key
from .secagg import SecAggConfig
from .server import OutputConfig, ServerConfig, check_device


def _methods() -> tuple[str, list[str]]:
    from peft_strategies import method_names

    return "PEFT method", method_names()


def _sources() -> Any:
    from fedpeft.data.sources import SOURCES

    return SOURCES


def _builtin() -> Any:
    from fedpeft.data.builtin import BUILTIN_DATASETS

    return BUILTIN_DATASETS


def _schedules() -> Any:
    from fedpeft.schedules import SCHEDULES

    return SCHEDULES


def _precisions() -> Any:
    from fedpeft.precision import PRECISIONS

    return PRECISIONS


def _augmentations() -> Any:
    from fedpeft.data.batches import AUGMENTATIONS

    return AUGMENTATIONS


def _elpv_tasks() -> Any:
    from fedpeft.data.elpv import ELPV_TASKS

    return ELPV_TASKS


def _partitioners() -> Any:
    from fedpeft.data.partitioners import PARTITIONERS

    return PARTITIONERS


@dataclass(frozen=True)
class ModelConfig:
    """``model.*``: timm name, weight source and input resolution."""

    name: str = key("vit_small_patch14_dinov2", "any timm ViT (`vit_small_patch14_dinov2`, "
                    "`vit_base_patch16_224.augreg2_in21k_ft_in1k`, ...)")  # fmt: skip
    weights: str = key("offline", "`hub` (timm pretrained, needs internet), `offline` (bundled "
                       "ViT-S/14), `random` (tests), or a path to a `.safetensors` / `torch.save` "
                       "file (`weights_only=True`); no silent fallback")  # fmt: skip
    img_size: int = key(56, "input resolution in pixels; position embeddings are resampled")

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

    PREFIX: ClassVar[str] = "data."
    source: str = key("builtin", "where the images come from (hub: a Hugging Face id via "
                      "flwr-datasets `FederatedDataset`)", choices=_sources)  # fmt: skip
    dataset: str = key("fashion-mnist", "built-in name, hub id, image folder or parquet path",
                       choices=_builtin, only_if="data.source = \"builtin\"")  # fmt: skip
    image_column: str = key("", "image column; empty = guess (image, img, ...)")
    label_column: str = key("", "label column; empty = guess (label, fine_label, ...)")
    test_split: str = key("test", "split held out for central evaluation (carved from train "
                          "if absent)")  # fmt: skip
    partitioner: str = key("iid", "how the training pool is split across clients",
                           choices=_partitioners)  # fmt: skip
    train_size: int = key(4000, "training images shared by all clients (0 = all)")
    test_size: int = key(1000, "central test images (0 = all)")
    dirichlet__alpha: float = key(0.5, "dirichlet: concentration α of the per-class proportions")
    dirichlet__min_partition_size: int = key(10, "dirichlet: resample until every client has "
                                             "at least this many images")  # fmt: skip
    shard__classes_per_client: int = key(2, "shard: classes each client holds")
    elpv__task: str = key("defect", "elpv: the label (defect: the expert's defect "
                          "probability >= 0.5; defect-4: that probability as 4 classes; "
                          "module-type: mono or poly)", choices=_elpv_tasks)  # fmt: skip
    local_test_fraction: float = key(0.0, "fraction of each client's images held out from "
                                     "its training, on which it evaluates when asked "
                                     "(server.fraction-evaluate); seeded per client")  # fmt: skip

    def __post_init__(self) -> None:
        check_choices(self, self.PREFIX)
        if self.source == "builtin":
            builtin, sources = _builtin(), _sources()
            others = [s for s in sources.names() if s != "builtin"]
            check(
                self.dataset in builtin,
                "data.dataset",
                self.dataset,
                f"unknown {builtin.what}; choose one of {builtin.names()} or set "
                f"data.source to one of {others}",
            )
        check(bool(self.dataset), "data.dataset", self.dataset, "must not be empty")
        if self.source == "builtin" and self.dataset == "elpv":
            from fedpeft.data.elpv import INSTALL_HINT, available

            check(available(), "data.dataset", self.dataset, INSTALL_HINT)
        check(self.train_size >= 0, "data.train-size", self.train_size, "must be >= 0 (0 = all)")
        check(self.test_size >= 0, "data.test-size", self.test_size, "must be >= 0 (0 = all)")
        frac = self.local_test_fraction
        check(0 <= frac <= 0.5, "data.local-test-fraction", frac, "must be in [0, 0.5]")
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
    """``train.*``: local SGD on each client (the learning rate is ``peft.<method>.lr``)."""

    PREFIX: ClassVar[str] = "train."
    epochs: int = key(1, "local epochs per round")
    batch_size: int = key(32, "local batch size (DP-SGD: the expected Poisson batch size)")
    momentum: float = key(0.9, "SGD momentum")
    nesterov: bool = key(True, "Nesterov momentum")
    weight_decay: float = key(1e-4, "SGD weight decay")
    proximal_mu: float = key(0.0, "FedProx: μ of the proximal term (μ/2)·‖w − w_sent‖² over "
                             "the trainable tensors (DP-SGD too); 0 = plain training")  # fmt: skip
    lr_schedule: str = key("constant", "the lr the server sends over the rounds (a factor "
                           "of peft.<method>.lr, after the warm-up)",
                           choices=_schedules)  # fmt: skip
    warmup_rounds: int = key(0, "rounds of linear warm-up before the schedule (round r of W "
                             "gets r/W of the lr)")  # fmt: skip
    lr_step_rounds: int = key(10, "step: rounds between two lr cuts")
    lr_gamma: float = key(0.1, "step: factor of each lr cut")
    device: str = key("auto", "where clients train: `auto` (CUDA, else `mps`, else CPU; logged), "
                      "`cpu`, `cuda`, `cuda:N`, `mps`; a device the client lacks fails its "
                      "first round naming this key")  # fmt: skip
    precision: str = key("auto", "autocast dtype of forward and backward (parameters, optimizer "
                         "state and what travels stay fp32): `auto` = bf16 where the device "
                         "has it natively (CUDA, CPUs with AVX512-BF16/AMX), fp16 on older "
                         "CUDA, else fp32; fp16 scales the loss; local DP: fp32 only",
                         choices=_precisions)  # fmt: skip
    augment: str = key("none", "augmentation of training batches on the device (`flip`; "
                       "`crop-flip`: pad 1/8, random crop, flip); anything but `none` turns "
                       "off the feature cache", choices=_augmentations)  # fmt: skip
    feature_cache: bool = key(True, "when only the head trains, compute each worker's frozen "
                              "features once and train and evaluate the head on them")  # fmt: skip
    num_threads: int = key(0, "CPU threads of torch per process; 0 = the CPUs it may use "
                           "(OMP_NUM_THREADS, set by Ray and fedpeft-deploy, else its "
                           "affinity)")  # fmt: skip

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
        check_choices(self, self.PREFIX)
        check(0 <= self.proximal_mu < math.inf, "train.proximal-mu", self.proximal_mu,
              "must be a finite number >= 0")  # fmt: skip
        check(self.warmup_rounds >= 0, "train.warmup-rounds", self.warmup_rounds, "must be >= 0")
        check(self.lr_step_rounds >= 1, "train.lr-step-rounds", self.lr_step_rounds,
              "must be >= 1")  # fmt: skip
        check(0 < self.lr_gamma <= 1, "train.lr-gamma", self.lr_gamma, "must be in (0, 1]")
        check_device("train.device", self.device)
        check(self.num_threads >= 0, "train.num-threads", self.num_threads, "must be >= 0")

    @property
    def caches_features(self) -> bool:
        """Whether head-only training may reuse frozen features (no augmentation to redo)."""
        return self.feature_cache and self.augment == "none"


@dataclass(frozen=True)
class PeftConfig:
    """``peft.method`` and the selected method's ``peft.<method>.*`` values.

    Each method declares its own keys in its config class beside its code
    (``peft_strategies/<method>.py``), as peft does; every registered method's keys
    are valid run-config keys, and ``params`` holds the selected one's.
    """

    PREFIX: ClassVar[str] = "peft."
    method: str = key("lora", "the PEFT method trained and sent", choices=_methods)
    params: Any = field(default=None, compare=True)
    head: Any = field(default=None, compare=True)  # peft.head.*: every method's head options

    def __post_init__(self) -> None:
        check_choices(self, self.PREFIX)


@dataclass(frozen=True)
class RunConfig:
    """The whole run config."""

    seed: int = key(42, "seeds the model, the partitions, client sampling and training")
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    dp: DpConfig = field(default_factory=DpConfig)
    comm: CommConfig = field(default_factory=CommConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)

    def __post_init__(self) -> None:
        if self.server.lr == 0:  # resolved once, here: the strategy and metrics.json see it
            from fedpeft.server_opt import OPTIMIZERS
            from peft_strategies import get_method

            trains_backbone = get_method(self.peft.method).trains_backbone
            lr = OPTIMIZERS[self.server.optimizer].default_lr_for(trains_backbone)
            object.__setattr__(self, "server", replace(self.server, lr=lr))

    @property
    def lr(self) -> float:
        """Learning rate of the selected PEFT method (what the server sends each round)."""
        return float(self.peft.params.lr)
