"""How large honest updates are: the evidence behind the poisoning guard's defaults.

    .venv/bin/python -m benchmarks.guard --out docs/results/guard.json

Two parts. (1) Replays every ``update_norms`` list recorded in a ``metrics.json`` under
``docs/results`` (at any depth) through :class:`server_app.guard.Guard` with the run
config's defaults and counts refusals: only rounds of 3 or more replies or with a
recorded ``global_norm`` can be judged (the first edition's runs had neither). Runs
that ran with the guard on recorded only the norms it accepted, so their replay is a
check that today's defaults still accept them; what the guard refused in those runs
is listed from each round's ``rejections`` (``refused_in_runs``), to be read as the
real test of false rejections; what the replay refuses is counted per run
(``refused_by_run``). ``--replay-only`` redoes part (1) alone and keeps the
measured runs already in ``--out``.
(2) Trains every client of a round from the same global model (the ClientApp's
seeds and training, :func:`benchmarks.plain_loop.fedavg_round`), for every PEFT method,
IID and Dirichlet α = 0.1, and records each honest update's norm relative to the
round's median and to the global model's norm, the two things the guard bounds; then
counts what the default guard would have refused (a false rejection each).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from benchmarks.plain_loop import ROOT, app_config, fedavg_round
from fedpeft.arrays import to_numpy, trainable_state
from fedpeft.config import ServerConfig
from fedpeft.data import load_partition, load_test
from fedpeft.device import set_threads
from fedpeft.engine import make_engine
from fedpeft.model import build_model
from peft_strategies import method_names
from server_app.guard import MIN_REPLIES, Guard
from server_app.validation import model_norm, update_norm

# Fewer images than the default job (200 per client, not 400): fewer local steps make
# the clients of a Dirichlet split more unlike each other, the harder case.
SETTINGS = {
    "iid": "data.partitioner='iid'",
    "dirichlet-0.1": (
        "data.partitioner='dirichlet' data.dirichlet.alpha=0.1 data.dirichlet.min-partition-size=10"
    ),
}
BASE = "data.train-size=2000 server.num-rounds=2"


def default_guard() -> Guard:
    """The guard the run config's defaults build (server_app.app.make_strategy)."""
    server = ServerConfig()
    return Guard(server.guard__round_factor, server.guard__model_factor)


def replay_committed(guard: Guard, results: Path) -> dict:
    """Every recorded round through ``guard``: rounds judged, replies refused (per run).

    A run made with the guard off recorded every norm, the diverged ones too: what the
    replay refuses there is named by run, to be read beside that run's training loss.
    """
    rounds = judged = refused = 0
    in_runs, by_run = [], {}
    for path in sorted(results.glob("**/metrics.json")):
        run = path.parent.relative_to(results).as_posix()
        for row in json.loads(path.read_text())["rounds"]:
            for node, reason in (row.get("rejections") or {}).items():
                if "server.guard" in reason:
                    in_runs.append({"run": run, "round": row["round"], "node": node,
                                    "reason": reason})  # fmt: skip
            norms = row.get("update_norms") or {}
            if not norms:
                continue
            rounds += 1
            sent = row.get("global_norm")
            if len(norms) < MIN_REPLIES and sent is None:
                continue  # neither bound can be judged from what was recorded
            judged += 1
            out = len(guard.screen(dict(enumerate(norms.values())), sent or 0.0))
            refused += out
            if out:
                by_run[run] = by_run.get(run, 0) + out
    return {"rounds_with_norms": rounds, "rounds_judged": judged, "refused": refused,
            "refused_by_run": by_run, "refused_in_runs": in_runs}  # fmt: skip


def measure(method: str, setting: str, num_clients: int, guard: Guard) -> dict:
    """Honest updates of every client in 2 rounds: ratios and what the guard refuses."""
    cfg = app_config([BASE, SETTINGS[setting], f"peft.method='{method}'"])
    test = load_test(cfg.data, cfg.seed, cfg.model.img_size)
    model = build_model(cfg.model, cfg.peft, test.num_classes, cfg.seed)
    set_threads(cfg.train.num_threads)
    engine = make_engine(model, cfg.train.device, cfg.train.precision, cfg.train.augment)
    parts = {p: load_partition(cfg.data, cfg.seed, cfg.model.img_size, p, num_clients)
             for p in range(num_clients)}  # fmt: skip
    glob = {k: v.clone() for k, v in trainable_state(model).items()}
    rounds = []
    for server_round in (1, 2):
        # to_numpy: the tensors are on train.device (a GPU under `auto`)
        sent = {k: v.copy() for k, v in to_numpy({k: v.float() for k, v in glob.items()}).items()}
        norms: dict[int, float] = {}

        def seen(pid: int, state: dict, sent: dict = sent, norms: dict = norms) -> None:
            norms[pid] = update_norm(to_numpy({k: v.float() for k, v in state.items()}), sent)

        glob, _ = fedavg_round(model, glob, parts, cfg, engine, server_round, seen)
        sent_norm = model_norm(sent)
        median = statistics.median(norms.values())
        rounds.append({
            "round": server_round,
            "global_norm": sent_norm,
            "update_norms": norms,
            "max_over_median": max(norms.values()) / median,
            "max_over_model": max(norms.values()) / max(sent_norm, 1.0),
            "refused": sorted(guard.screen(norms, sent_norm)),
        })  # fmt: skip
    return {"method": method, "setting": setting, "clients": num_clients,
            "sizes": [len(parts[p].labels) for p in parts], "rounds": rounds}  # fmt: skip


def _write(out: Path, result: dict) -> None:
    out.write_text(json.dumps(result, indent=2, default=lambda x: math.nan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-clients", type=int, default=10)
    parser.add_argument("--methods", nargs="*", default=method_names())
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--replay-only", action="store_true", help="redo the replay, keep --out's measured runs"
    )
    args = parser.parse_args()
    guard = default_guard()
    committed = replay_committed(guard, ROOT / "docs" / "results")
    if args.replay_only:
        result = json.loads(args.out.read_text())
        result["committed"] = committed
        _write(args.out, result)
        return
    start = time.perf_counter()
    result = {"guard": {"round_factor": guard.round_factor,
                        "model_factor": guard.model_factor},
              "committed": committed,
              "runs": []}  # fmt: skip
    for setting in SETTINGS:
        for method in args.methods:
            run = measure(method, setting, args.num_clients, guard)
            result["runs"].append(run)
            worst = max(run["rounds"], key=lambda r: r["max_over_median"])
            print(f"{setting:14s} {method:8s} max/median {worst['max_over_median']:6.2f}  "
                  f"max/model {max(r['max_over_model'] for r in run['rounds']):8.4f}  "
                  f"refused {[r['refused'] for r in run['rounds']]}", flush=True)  # fmt: skip
    result["seconds"] = time.perf_counter() - start
    _write(args.out, result)


if __name__ == "__main__":
    main()
