"""Deployment end to end: a SuperNode SIGKILLed mid-run, and the run still completes.

A TLS federation of 2 SuperNodes on 127.0.0.1 (no authentication); the second is
killed while it trains in round 1. (The TLS + authentication federation is
``test_deploy.py``.)
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from fedpeft.deploy.launcher import Federation
from fedpeft.deploy.spec import FederationSpec
from fedpeft.deploy.weights import export_offline_backbone
from fedpeft.offline_vit import CACHE_FILE
from fedpeft.procs import alive

from .helpers import ROOT, deploy_config

pytestmark = pytest.mark.e2e


def test_run_completes_after_a_supernode_is_killed(tmp_path):
    # Prepare: TLS without authentication; a round needs one reply. The round timeout is
    # generous: the SuperLink answers for a dead node once its heartbeat lapses (<= 60 s).
    out = tmp_path / "outputs"
    export_offline_backbone(tmp_path / "cache" / CACHE_FILE)
    spec = FederationSpec(
        app=ROOT,
        workdir=tmp_path / "work",
        tls=True,
        auth=False,
        env={"FEDPEFT_CACHE": str(tmp_path / "cache")},
    )
    config = deploy_config(out, "server.min-train-nodes=1 server.round-timeout=300.0")
    with Federation(spec) as fed:
        run = fed.cli.start_run(config)
        result: list = []  # drained in a thread so flwr run never blocks on a full pipe
        waiter = threading.Thread(target=lambda: result.extend(fed.cli.finish_run(run, 600)))
        waiter.start()
        node_log = fed.work / "supernode-2.log"
        deadline = time.monotonic() + 300
        while "Receiving: train message" not in node_log.read_text():
            assert time.monotonic() < deadline and waiter.is_alive(), "no train message"
            time.sleep(0.2)
        # Execute: the second device dies (SIGKILL, whole process group) while training
        fed.kill_supernode(1)
        waiter.join()
        _, status, output = result
    # Assert: round 1 goes on with the survivor's reply, round 2 has only the survivor
    assert status == "finished:completed", output[-4000:]
    rows = json.loads((out / "deploy" / "metrics.json").read_text())["rounds"]
    assert [r["accepted"] for r in rows[1:]] == [1, 1], rows
    assert rows[1]["clients"] == 2 and rows[1]["failed"] == 1  # NODE_UNAVAILABLE for the dead
    assert rows[2]["clients"] == 1
    assert not [pid for pid in fed.signalled if alive(pid)]
    assert fed.leftovers() == set()
