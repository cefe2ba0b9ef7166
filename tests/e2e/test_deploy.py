"""Deployment end to end: a SuperLink and SuperNodes as separate processes on 127.0.0.1.

One TLS + authentication federation of 2 SuperNodes (one on a partition, one on
its own image folder with a local weights file) refuses an unregistered node, then runs
2 rounds: a registered impostor claiming another node's partition is refused
(``server.partition-registry``); in round 2 the image-folder SuperNode is SIGKILLed
while it trains and the round completes with the survivor, which meanwhile stops
(SIGTERM) and starts again: it keeps its node id and partition, is not asked again, and
is sampled for round 2's evaluation. The federation survives a
SuperLink restart on the same database and stops with no process left. The run is
FedSA-LoRA (``peft.lora.federation='fedsa'``): each SuperNode keeps its B in the run's
``Context.state`` between rounds, and its personalised model (evaluated on the images it
holds out) learns. The image-folder SuperNode trains LoRA at rank 4 of the run's 8
(``lora-rank`` in its node-config: HetLoRA), so the server sends it, and checks it
against, its own shapes.
The tests run in this file's order, on the one federation: a second federation
would cost its SuperLink's and SuperNodes' start-up again.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from fedpeft.offline_vit import CACHE_FILE
from fedpeft.tools.deploy.launcher import Federation
from fedpeft.tools.deploy.spec import FederationSpec
from fedpeft.tools.deploy.weights import export_offline_backbone
from fedpeft.tools.procs import alive

from .helpers import ROOT, deploy_config, reply_bytes

pytestmark = pytest.mark.e2e


# The image-folder SuperNode's images: twice the partition node's 575 training images
# (1,437 digits in 2 partitions, a fifth held out), so on any CPU and under any load it is
# still training in round 2 when the partition node replies, the moment it is killed.
DEVICE_IMAGES = 1_440


def _digits_folder(root: Path, count: int = DEVICE_IMAGES) -> Path:
    """A device's own images: sklearn digits as PNGs in <label>/ folders."""
    digits = load_digits()
    for i in range(count):
        folder = root / str(int(digits.target[i]))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


LOW_RANK = 4  # the image-folder SuperNode's LoRA rank (the run's peft.lora.r: 8)


def _reply_sent(node_log: str, n: int) -> bool:
    """Whether the SuperNode's ``n``-th train reply reached the SuperLink (its log says
    "Sent successfully" after "Sending: train message")."""
    after = node_log.split("Sending: train message")
    return len(after) > n and "Sent successfully" in after[n]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    weights = export_offline_backbone(tmp / "weights" / "backbone.safetensors")
    export_offline_backbone(tmp / "cache" / CACHE_FILE)  # this test's own $FEDPEFT_CACHE
    spec = FederationSpec(
        app=ROOT, workdir=tmp / "work", num_supernodes=2, tls=True, auth=True,
        env={"FEDPEFT_CACHE": str(tmp / "cache")},
        node_configs=[
            {"partition-id": 0, "num-partitions": 2},
            {"data-path": str(_digits_folder(tmp / "device-images")),
             "weights-path": str(weights), "lora-rank": LOW_RANK},
        ],
    )  # fmt: skip
    federation = Federation(spec)
    with federation:
        yield federation


# Round 1: both SuperNodes train; round 2: the partition node trains from its own B
# (FedSA) and replies, the image-folder SuperNode (twice the images) is SIGKILLed as it
# still trains; then the partition node restarts, and evaluates round 2 with B at its
# init: Flower keeps Context.state in the SuperNode's memory. Each round one node
# (seeded by round, among the live ones) evaluates on the fifth of its images it holds
# out. The server waits for 2 connected
# nodes (server.min-train-nodes; the impostor is one), so round 2's evaluation waits for
# the restarted node. (A third round, to train it again, cost ~50 busy CPU-seconds: CI's
# 15 minutes did not hold.) A round needs one reply; the round timeout is generous:
# the SuperLink answers for a dead node once its heartbeat lapses (<= 60 s). One run, not two: in
# deployment each message is a fresh ClientApp process (~15 busy CPU-seconds each here),
# and a second run costs its ServerApp and its queries again (the two runs this replaces:
# 457 busy CPU-seconds for this file, 2026-12-03).
RUN = ("server.num-rounds=2 server.min-train-nodes=2 server.round-timeout=300.0 "
       "peft.lora.federation='fedsa' server.fraction-evaluate=0.5 "
       "data.local-test-fraction=0.2")  # fmt: skip
CHANCE = 0.1  # digits: 10 classes
KILLED_IN = 2  # the round whose training the image-folder SuperNode dies in
RESTARTED_AFTER = 2  # the round after whose train reply the partition SuperNode restarts
PULL_INTERVAL = 3.0  # seconds between the ServerApp's pulls of replies (Flower's HttpGrid)


@pytest.fixture(scope="module")
def deploy_run(fed):
    """The run: a registry binds partition 0 to supernode-1's key while an impostor
    (registered, authenticated, node-config partition 0) claims it too; the image-folder
    SuperNode is SIGKILLed while it trains in round 2; supernode-1 stops and starts
    again (same key) once it has replied in round 2.
    """
    out = fed.work.parent / "outputs"
    out.mkdir()
    registry = out / "registry.toml"
    registry.write_text(f'0 = "{fed.work / "keys" / "supernode-1.pub"}"\n')
    impostor = fed.start_supernode(0, name="impostor")  # supernode-1's node-config
    fed.wait_online(3)
    config = deploy_config(out, f"{RUN} server.partition-registry='{registry}'")
    node_log = fed.work / "supernode-2.log"
    run = fed.cli.start_run(config)
    result: list = []  # drained in a thread so flwr run never blocks on a full pipe
    waiter = threading.Thread(target=lambda: result.extend(fed.cli.finish_run(run, 900)))
    waiter.start()
    deadline = time.monotonic() + 600
    partition_log = fed.work / "supernode-1.log"
    while not _reply_sent(partition_log.read_text(), RESTARTED_AFTER):
        assert time.monotonic() < deadline and waiter.is_alive(), "no round-2 reply"
        time.sleep(0.05)
    # The image-folder device dies (SIGKILL, whole process group) while it trains round 2:
    # killed as the partition node replies, so round 2 waits for it until its heartbeat
    # lapses (30-60 s), whatever the CPU's speed
    trained = node_log.read_text()
    assert trained.count("Receiving: train message") == KILLED_IN, trained[-2000:]
    assert not _reply_sent(trained, KILLED_IN), "the image-folder node replied first"
    fed.kill_supernode(1)
    # The partition device, once the ServerApp has its reply, goes down (SIGTERM: it
    # signs off) and comes back with its key while round 2 waits for the dead one. Not
    # sooner: Flower's link state answers a pull for a node that is offline with
    # NODE_UNAVAILABLE even when its reply is already stored (seen here), and the
    # ServerApp pulls every 3 s (HttpGrid)
    time.sleep(2 * PULL_INTERVAL + 0.5)
    fed.kill_supernode(0, signal.SIGTERM)
    restarted_at = len(partition_log.read_text())
    fed.start_supernode(0, register=False)
    waiter.join()
    run_id, status, output = result
    after_restart = partition_log.read_text()[restarted_at:]
    return run_id, status, output, out / "deploy", impostor, after_restart


def test_unregistered_supernode_is_refused(fed):
    # Execute: a SuperNode with a valid key pair that nobody registered
    proc = fed.start_supernode(0, name="intruder", register=False, max_retries=0)
    code = proc.wait(timeout=120)
    # Assert
    assert code != 0
    log = (fed.work / "intruder.log").read_text()
    assert "Failed to initialize the connection" in log, log[-2000:]
    assert len(fed.cli.nodes()) == 2  # only the two registered nodes are known


def test_tls_auth_run_completes_on_both_supernodes(deploy_run):
    # Prepare
    run_id, status, output, out, *_ = deploy_run
    # Assert
    assert status == "finished:completed", output[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["run_id"] == run_id
    assert [r["round"] for r in metrics["rounds"]] == [0, 1, 2]
    for row in metrics["rounds"][1:KILLED_IN]:
        assert row["accepted"] == 2, row  # the partition node and the image-folder node
    assert (out / "final_trainable.safetensors").is_file()
    assert (out / "metrics.csv").is_file()


def test_fedsa_keeps_b_on_each_supernode_and_learns(deploy_run):
    # Prepare
    _, _, _, out, *_ = deploy_run
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    full, low = reply_bytes(RUN, 1), reply_bytes(RUN, 1, rank=LOW_RANK)
    # Assert: both SuperNodes start B from its init in round 1, the partition node from
    # its own Context.state in round 2;
    # every reply is exactly A (at the node's rank: 8, and 4 on the image-folder node) and
    # the head: no B travels
    restored = [sorted(m["local-restored"] for m in r["client_metrics"]) for r in rounds[1:]]
    assert restored == [[0, 0], [1]]
    sent = [sorted(m["bytes-up"] for m in r["client_metrics"]) for r in rounds[1:]]
    assert sent == [sorted([full, low]), [full]]
    # Baseline in the same run: round 0 (the untrained head, ~chance). The server's
    # global model has B at its init (0): A and the head shared; the personalised
    # models (each node's own B) are what FedSA trains for. Measured here 2026-12-03
    # (both nodes evaluating, 2 rounds): global 0.147 → 0.317 → 0.297, personalised
    # 0.512 → 0.690
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"]
    assert [r["clients_evaluated"] for r in rounds[1:]] == [1, 1]
    assert rounds[-1]["client_accuracy"] >= 2 * CHANCE


def test_run_completes_after_a_supernode_is_killed(fed, deploy_run):
    # Prepare
    _, status, output, out, *_ = deploy_run
    # Assert: round 2 goes on with the survivor's reply
    assert status == "finished:completed", output[-4000:]
    last = json.loads((out / "metrics.json").read_text())["rounds"][KILLED_IN]
    assert last["clients"] == 2 and last["failed"] == 1, last  # NODE_UNAVAILABLE for the dead
    assert last["accepted"] == 1 and not last["failed_round"], last
    assert not [pid for pid in fed.signalled if alive(pid)]


def test_a_restarted_supernode_keeps_its_partition_and_is_sampled_again(fed, deploy_run):
    # Prepare
    _, status, output, out, _, after_restart = deploy_run
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    # Assert: the SuperNode that restarted after its round-2 reply was sampled for round
    # 2's evaluation, as partition 0, without being asked again: it came back with its
    # node id (Flower binds the id to the authenticated key), so the ServerApp still knew
    # its partition; that reply was not lost to its restart
    assert status == "finished:completed", output[-4000:]
    assert [m["partition-id"] for m in rounds[RESTARTED_AFTER]["client_metrics"]] == [0]
    assert "Receiving: evaluate message" in after_restart
    assert "Receiving: query message" not in after_restart
    assert f"round {RESTARTED_AFTER}: evaluating on partitions [0]" in output


def test_a_supernode_claiming_anothers_partition_is_refused(fed, deploy_run):
    # Prepare
    _, _, output, _, impostor, _ = deploy_run
    impostor_log = (fed.work / "impostor.log").read_text()
    # Assert: the impostor was asked once, refused with the reason in the ServerApp's
    # log, and never sampled: every train message went to partition 0's owner or the
    # image-folder node (2 clients a round above), none to the impostor
    assert "Receiving: query message" in impostor_log
    assert "Receiving: train message" not in impostor_log
    assert "partition 0 is bound to another SuperNode's public key" in output, output[-4000:]
    assert impostor.poll() is None  # authenticated and connected all along


def test_superlink_restart_keeps_runs_and_nodes(fed, deploy_run):
    # Prepare
    run_id = deploy_run[0]
    # Execute: stop and start the SuperLink on the same --database
    fed.stop_superlink()
    fed.start_superlink()
    # Assert
    runs = {int(r["run-id"]): r["status"] for r in fed.cli.runs()}
    assert runs.get(run_id) == "finished:completed", runs
    fed.wait_online(2)  # the registered SuperNodes still alive (supernode-1, the impostor)
    # reconnect on their own


def test_stop_leaves_no_process(fed):
    # Prepare
    pids = set(json.loads((fed.work / "pids.json").read_text()).values())
    assert len(pids) == 3  # SuperLink, the surviving SuperNode and the impostor (intruder
    # exited, one killed)
    # Execute
    signalled = fed.stop()
    # Assert
    assert pids <= signalled
    assert [pid for pid in signalled if alive(pid)] == []
    assert fed.leftovers() == set()  # nothing started under this work dir survives
    assert json.loads((fed.work / "pids.json").read_text()) == {}
