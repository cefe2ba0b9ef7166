"""Shared fixtures: a tiny random ViT and a flat run config."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import tomllib
import torch

ROOT = Path(__file__).resolve().parents[1]


# The longest files first, each given to the next free worker (`make test` passes
# --no-loadscope-reorder: by default pytest-xdist orders files by their number of tests,
# which puts these behind parametrized unit files, test_resume starting ~440 s into the run).
# Seconds each file took in the fresh-clone CI run of 2026-12-03 (-n 3, three
# files at once on 2 cores). The files that mostly wait (a dead node's heartbeat in
# test_deploy, a round timeout in test_straggler) come early, so that their waits overlap
# the busy runs instead of ending the suite. Only the order changes; a file not listed
# keeps its place after these.
LONGEST_FIRST = (
    "e2e/test_deploy.py",  # 290 (one 2-round run; 370 with 3 rounds)
    "e2e/test_simulation.py",  # 260 (the learning run, the SIGTERM drill, a bad config)
    "e2e/test_resume.py",  # 360 (the killed run, the in-process reference, the resumed run)
    "e2e/test_straggler.py",  # 201, a third of it waiting for the round timeout
    "e2e/test_compression.py",  # 160
    "e2e/test_dp.py",  # 140 (local DP on an existing Ray cluster)
    "e2e/test_robustness.py",  # 135
    "e2e/test_faults.py",  # 72 (and the full disk in the same run)
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        path = item.path.relative_to(ROOT / "tests").as_posix()
        return rank.get(path, len(rank))

    items.sort(key=key)  # stable: the rest keep their collection order


def pytest_configure(config: pytest.Config) -> None:
    # One torch thread per test process: `make test` runs three at once on 2 cores (with
    # the end-to-end runs' processes beside them), and threads past the cores spin.
    torch.set_num_threads(1)


@pytest.fixture
def pyproject_config() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["flwr"]["app"]["config"]


def tiny_vit(num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=num_classes, img_size=32)


def model_input(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Reference input of RGB uint8 images already at the model's size: [0, 1], standardised."""
    cfg = timm.data.resolve_data_config({}, model=model)
    mean, std = (torch.tensor(cfg[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    return (images.float() / 255.0 - mean) / std


@pytest.fixture(autouse=True)
def _task_identity():
    # Flower Messages read the running task's identity, as inside a ServerApp.
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


@pytest.fixture(autouse=True)
def _project_loggers():
    # A test (or a module fixture) that runs the ServerApp or ClientApp in-process calls
    # fedpeft.logs.setup_logging, which stops the project's loggers propagating (to Flower's
    # handlers instead). Each test ends with them as a fresh process has them, so later tests
    # read their records with caplog. Not a saved-and-restored state: pytest (9.x) attaches
    # its capture handlers to every non-propagating logger at each phase, so a state saved
    # in one phase holds that phase's handlers, and restoring it kept them for good.
    import logging

    yield
    for name in ("fedpeft", "server_app", "client_app", "peft_strategies"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.NOTSET)
        logger.handlers.clear()
        logger.propagate = True
