"""The host's cores divided among locally launched SuperNodes (no Flower process started)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fedpeft.tools import procs
from fedpeft.tools.deploy import cli, cpus
from fedpeft.tools.deploy.launcher import Federation
from fedpeft.tools.deploy.spec import FederationSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("available", "n", "expected"),
    [
        ([0, 1], 2, [{0}, {1}]),
        ([0, 1, 2, 3, 4, 5, 6, 7], 3, [{0, 1, 2}, {3, 4, 5}, {6, 7}]),
        ([4, 5, 6, 7], 1, [{4, 5, 6, 7}]),
        ([0, 1], 3, [{0}, {1}, {0}]),  # more SuperNodes than CPUs: one each, round-robin
        ([9, 2, 5], 2, [{2, 5}, {9}]),  # an affinity with gaps, unordered
    ],
)
def test_split_cpus_gives_each_supernode_its_own_even_share(available, n, expected):
    # Execute
    sets = cpus.split_cpus(available, n)
    # Assert
    assert sets == expected


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16])
def test_split_cpus_covers_every_cpu_once_while_there_are_enough(n):
    # Prepare
    available = list(range(16))
    # Execute
    sets = cpus.split_cpus(available, n)
    # Assert: disjoint, complete, sizes within one of each other
    assert sorted(c for s in sets for c in s) == available
    assert max(map(len, sets)) - min(map(len, sets)) <= 1


@pytest.mark.parametrize(("available", "n", "match"), [([0], 0, "n=0"), ([], 2, r"cpus=\[\]")])
def test_split_cpus_refuses_nothing_to_split(available, n, match):
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        cpus.split_cpus(available, n)


def test_cpu_lists_are_written_as_taskset_writes_them():
    # Execute / Assert
    assert cpus.format_cpus({5, 0, 1, 2, 7, 8}) == "0-2,5,7-8"


def _federation(tmp_path: Path, n: int, cpu_split: bool = True) -> Federation:
    spec = FederationSpec(app=ROOT, workdir=tmp_path / "fed", num_supernodes=n, tls=False,
                          auth=False, cpu_split=cpu_split)  # fmt: skip
    return Federation(spec)  # builds commands; starts nothing


def test_each_supernodes_environment_carries_its_shares_thread_count(tmp_path, monkeypatch):
    # Prepare: an 8-CPU host for 3 SuperNodes; the launcher's own environment says 99
    monkeypatch.setattr("fedpeft.tools.deploy.launcher.host_cpus", lambda: list(range(8)))
    monkeypatch.setenv("OMP_NUM_THREADS", "99")
    fed = _federation(tmp_path, 3)
    # Execute
    envs = [fed.supernode_env(i, tmp_path / f"home-{i}") for i in range(3)]
    shares = [fed.supernode_cpus(i) for i in range(3)]
    # Assert: 3 + 3 + 2 threads on disjoint CPUs; the SuperLink keeps the launcher's
    assert [e["OMP_NUM_THREADS"] for e in envs] == ["3", "3", "2"]
    assert [e["MKL_NUM_THREADS"] for e in envs] == ["3", "3", "2"]
    assert shares == [{0, 1, 2}, {3, 4, 5}, {6, 7}]
    assert fed.env(tmp_path / "link")["OMP_NUM_THREADS"] == "99"


def test_without_the_split_a_supernode_keeps_all_cpus_and_threads(tmp_path, monkeypatch):
    # Prepare
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    fed = _federation(tmp_path, 2, cpu_split=False)
    # Execute
    env = fed.supernode_env(0, tmp_path / "home")
    # Assert
    assert fed.supernode_cpus(0) is None
    assert "OMP_NUM_THREADS" not in env


def test_fedpeft_deploy_splits_unless_told_not_to():
    # Execute
    default = cli._parser().parse_args([])
    opted_out = cli._parser().parse_args(["--no-cpu-split"])
    # Assert
    assert (default.no_cpu_split, opted_out.no_cpu_split) == (False, True)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_a_started_supernode_and_its_children_run_on_its_share(tmp_path, monkeypatch):
    # Prepare: 2 SuperNodes on this host's CPUs; each "SuperNode" is a shell that starts a
    # child a moment later, as flower-supernode starts its ClientApps
    fed = _federation(tmp_path, 2)
    monkeypatch.setattr(fed, "supernode_cmd",
                        lambda *_a, **_k: ["sh", "-c", "sleep 0.2; sleep 30 & wait"])  # fmt: skip
    expected = cpus.split_cpus(cpus.host_cpus(), 2)
    try:
        # Execute
        nodes = [fed.start_supernode(i) for i in range(2)]
        time.sleep(0.6)
        # Assert: the SuperNode, and the child it started, on its own share and thread count
        for node, share in zip(nodes, expected, strict=True):
            (child,) = procs.descendants([node.pid])
            for pid in (node.pid, child):
                assert os.sched_getaffinity(pid) == share
                assert _environ(pid)["OMP_NUM_THREADS"] == str(len(share))
    finally:
        fed.stop()
