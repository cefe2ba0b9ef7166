"""Seeded sampling keyed on partition ids: reproducible across runs with new node ids."""

from __future__ import annotations

from server_app.sampling import NodeDirectory
from tests.fakes import FakeGrid


def _sampled_partitions(node_ids: list[int], seed: int, server_round: int) -> list[int]:
    grid = FakeGrid({n: i for i, n in enumerate(node_ids)}, {})
    directory = NodeDirectory(seed)
    picked = directory.sample(grid, server_round, fraction=0.5, min_nodes=2, min_available=2)
    return [grid.partitions[n] for n in picked]


def test_same_partitions_whatever_the_node_ids():
    # Prepare: two "runs" whose 8 nodes got different random ids
    run_a = [9001, 17, 4242, 5, 77777, 31, 8, 123456]
    run_b = [3, 99, 100, 12, 4, 5555, 6, 1]
    # Execute
    a = [_sampled_partitions(run_a, 42, r) for r in range(1, 6)]
    b = [_sampled_partitions(run_b, 42, r) for r in range(1, 6)]
    # Assert
    assert a == b
    assert all(len(s) == 4 for s in a)
    assert len({tuple(s) for s in a}) > 1  # rounds differ


def test_seed_changes_the_sample():
    nodes = list(range(100, 120))
    assert [_sampled_partitions(nodes, 1, r) for r in range(1, 4)] != [
        _sampled_partitions(nodes, 2, r) for r in range(1, 4)
    ]


def test_each_node_is_queried_once():
    # Prepare: node 13 is on its own image folder and has no partition id to tell
    grid = FakeGrid({10: 0, 11: 1, 12: 2, 13: None}, {})
    directory = NodeDirectory(0)
    # Execute
    for server_round in (1, 2, 3):
        directory.sample(grid, server_round, fraction=1.0, min_nodes=1, min_available=1)
    # Assert
    queries = [m for m in grid.sent if m.metadata.message_type == "query"]
    assert sorted(m.metadata.dst_node_id for m in queries) == [10, 11, 12, 13]
    assert directory.partition_of(12) == 2 and directory.label(13) == "node 13"


def test_excluded_partitions_are_never_sampled():
    # Prepare: 6 nodes, partitions 0 and 1 quarantined (server.exclude-partitions='0,1')
    grid = FakeGrid({100 + p: p for p in range(6)}, {})
    directory = NodeDirectory(42, exclude=frozenset({0, 1}))
    # Execute: every eligible node, then a sample of 2, over several rounds
    everyone = [directory.sample(grid, r, fraction=1.0, min_nodes=1, min_available=6)
                for r in (1, 2, 3)]  # fmt: skip
    some = [directory.sample(grid, r, fraction=0.5, min_nodes=2, min_available=6)
            for r in range(1, 11)]  # fmt: skip
    # Assert
    assert all(sorted(grid.partitions[n] for n in s) == [2, 3, 4, 5] for s in everyone)
    assert all(len(s) == 2 and not {grid.partitions[n] for n in s} & {0, 1} for s in some)


def test_a_partition_whose_node_left_goes_to_the_node_that_claims_it_next():
    # Prepare: node 10 holds partition 0; it restarts without authentication and comes
    # back as node 20 (a new key, so a new node id), while node 30 claims partition 1
    grid = FakeGrid({10: 0, 11: 1}, {})
    directory = NodeDirectory(0)
    directory.sample(grid, 1, fraction=1.0, min_nodes=1, min_available=2)
    grid.partitions = {20: 0, 11: 1, 30: 1}
    # Execute
    picked = directory.sample(grid, 2, fraction=1.0, min_nodes=1, min_available=3)
    # Assert: node 20 holds partition 0; node 30's claim on connected node 11's is refused
    assert directory.partition_of(20) == 0 and directory.label(30) == "node 30"
    assert sorted(directory.partition_of(n) for n in picked) == [0, 1]  # 30 not sampled
    grid.partitions = {10: 0, 20: 0, 11: 1}  # the old id comes back: asked, refused
    directory.sample(grid, 3, fraction=1.0, min_nodes=1, min_available=3)
    assert directory.label(10) == "node 10" and directory.partition_of(20) == 0
