"""Process-tree shutdown: children in their own session are stopped too."""

from __future__ import annotations

import subprocess
import time

from fedpeft.tools.procs import alive, descendants, stop_tree


def test_stop_tree_reaches_children_in_a_new_session():
    # Prepare: a leader whose child starts its own session (as Flower's SuperExec does)
    proc = subprocess.Popen(
        ["bash", "-c", "setsid sleep 300 & sleep 300 & wait"], start_new_session=True
    )
    deadline = time.monotonic() + 10
    while len(descendants([proc.pid])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = descendants([proc.pid])
    assert len(tree) == 2
    # Execute
    signalled = stop_tree([proc], grace=5)
    # Assert
    assert tree | {proc.pid} <= signalled
    assert not [pid for pid in signalled if alive(pid)]


def test_descendants_of_nothing_is_empty():
    # Execute / Assert
    assert descendants([]) == set()
