"""The ClientApp's SecAgg+ handlers (client_app/secagg.py) without the model: the key
stages import no torch, and the four stages' messages make the sum of the updates.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

# Three nodes run the four stages through the handlers; the server's side is the
# protocol core's (graph, server). Prints whether torch was imported.
SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from client_app import secagg as handlers
    from fedpeft import protocol
    from fedpeft.secagg import SecAggParams, graph, server

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    params = SecAggParams(num_clients=3, num_shares=3, threshold=2, clipping_range=1.0,
                          quantization_bits=20, modulus_bits=32, max_weight=10.0)
    nodes = [11, 22, 2**64 - 3]
    ctx = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
           for n in nodes}

    def call(handler, node, values, *extra):
        msg = Message(RecordDict({protocol.SECAGG: ConfigRecord(values)}), dst_node_id=node,
                      message_type="train.x", group_id="1")
        return handler(msg, ctx[node], *extra).content[protocol.SECAGG]

    keys = {}
    for n in nodes:
        reply = call(handlers.setup, n, params.to_config())
        keys[n] = (reply[protocol.SECAGG_PK1], reply[protocol.SECAGG_PK2])
    sealed = {}
    for n in nodes:
        reply = call(handlers.share_keys, n, {
            protocol.SECAGG_NEIGHBOURS: nodes,
            protocol.SECAGG_NEIGHBOUR_PK1: [keys[v][0] for v in nodes],
            protocol.SECAGG_NEIGHBOUR_PK2: [keys[v][1] for v in nodes]})
        sealed[n] = dict(zip(reply[protocol.SECAGG_DESTINATIONS],
                             reply[protocol.SECAGG_CIPHERTEXTS]))
    routed = graph.route(sealed)
    updates = {n: {"w": np.full(3, 0.1 * i, np.float32)} for i, n in enumerate(nodes)}
    zero = {"w": np.zeros(3, np.float32)}
    masked = {}
    for n in nodes[:2]:  # the third drops out after sharing its keys
        reply = call(handlers.masked, n, {
            protocol.SECAGG_SOURCES: sorted(routed[n]),
            protocol.SECAGG_CIPHERTEXTS: [routed[n][s] for s in sorted(routed[n])]},
            updates[n], zero, 2)
        masked[n] = reply[protocol.SECAGG_MASKED].numpy()
    shares = {}
    for n, (active, dropped) in graph.unmask_requests(routed, masked).items():
        reply = call(handlers.unmask, n, {protocol.SECAGG_ACTIVE: active,
                                          protocol.SECAGG_DROPPED: dropped})
        shares[n] = (reply[protocol.SECAGG_OWNERS], reply[protocol.SECAGG_SHARES])
    total, weight = server.aggregate(params, keys, routed, masked, shares, 3)
    print("torch" in sys.modules, np.round(total / weight, 4).tolist(), round(weight, 3))
""")


def test_key_stages_import_no_torch_and_sum_the_updates():
    # Execute: a fresh interpreter, as a node's ClientApp process
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": str(ROOT)})  # fmt: skip

    # Assert: no torch, and the two survivors' mean update (0 and 0.1, weight 2 each)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "False", out.stdout
    assert "[0.05, 0.05, 0.05]" in out.stdout and out.stdout.strip().endswith("4.0")
