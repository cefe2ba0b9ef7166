"""``fedpeft-deploy``: a local SuperLink + N SuperNodes, one run, then a clean stop.

TLS and SuperNode authentication are on by default (certificates and keys are
made under ``--workdir`` unless ``--cert-dir`` holds them); ``--insecure``
turns both off and must be asked for. The SuperLink keeps its state in
``--database``, so a later ``fedpeft-deploy`` on the same work dir lists the
earlier runs (``flwr ls``). The SuperNodes divide the host's cores among
themselves (``--no-cpu-split`` to let each use all of them).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ...config import node_config_arg
from ...progress import RunConsole, add_verbose_argument, setup_cli_logging
from .launcher import Federation
from .spec import FederationSpec

log = logging.getLogger("fedpeft.tools.deploy")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedpeft-deploy", description=__doc__.split("\n")[0])
    p.add_argument("--app", type=Path, default=Path.cwd(), help="Flower app directory")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("deployment"),
        help="logs, pids.json, keys, certificates and state (default: ./deployment)",
    )
    p.add_argument("--num-supernodes", type=int, default=2)
    p.add_argument(
        "--node-config",
        action="append",
        default=[],
        metavar="KEY=VALUE ...",
        help="node-config of the i-th SuperNode (repeat per node; default: "
        "partition-id=i num-partitions=N)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS and no SuperNode authentication (explicit opt-in)",
    )
    p.add_argument("--no-auth", action="store_true", help="TLS, but no SuperNode authentication")
    p.add_argument("--cert-dir", type=Path, help="ca.crt, server.pem, server.key (made if empty)")
    p.add_argument("--database", type=Path, help="SuperLink state (default: WORKDIR/state/...)")
    p.add_argument(
        "--run-config",
        "-c",
        action="append",
        default=[],
        help="passed to flwr run --run-config (repeatable)",
    )
    p.add_argument(
        "--no-cpu-split",
        action="store_true",
        help="let every SuperNode use all cores (default: SuperNode i gets its own share of "
        "the CPUs, pinned, and OMP_NUM_THREADS/MKL_NUM_THREADS of that size)",
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole run")
    add_verbose_argument(p, "WORKDIR/runs.log")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``fedpeft-deploy``)."""
    args = _parser().parse_args(argv)
    setup_cli_logging(args.verbose)
    try:
        spec = FederationSpec(
            app=args.app.resolve(),
            workdir=args.workdir,
            num_supernodes=args.num_supernodes,
            node_configs=[node_config_arg(c) for c in args.node_config],
            tls=not args.insecure,
            auth=not (args.insecure or args.no_auth),
            cert_dir=args.cert_dir,
            database=args.database,
            cpu_split=not args.no_cpu_split,
        )
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    with Federation(spec) as fed:
        log.info("%d SuperNodes online; submitting the app", spec.num_supernodes)
        with RunConsole(args.verbose) as console:
            run_id, status, _ = fed.run(args.run_config, timeout=args.timeout, echo=console)
        log.info("run %d: %s (runs.log, node logs and pids.json in %s)", run_id, status,
                 fed.work)  # fmt: skip
    return 0 if status == "finished:completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
