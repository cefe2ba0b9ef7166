"""``fedpeft-export RUN_DIR --out DIR [--round best|final|N]``: a run's model, standalone.

    .venv/bin/fedpeft-export outputs/my-run --out models/my-run               # final round
    .venv/bin/fedpeft-export outputs/my-run --out models/best --round best    # best accuracy
    .venv/bin/fedpeft-export outputs/my-run --out models/r10 --round 10       # output.save-every

Load it with ``fedpeft.tools.export.load(DIR)``; ``fedpeft-predict`` and ``fedpeft-evaluate``
use it from the command line.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ...backbones import WeightsError
from .run_files import parse_round
from .writer import export_run

log = logging.getLogger("fedpeft.tools.export")


def _round(text: str) -> str | int:
    try:
        return parse_round(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedpeft-export", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a run folder (outputs/<run-name>)")
    p.add_argument("--out", type=Path, required=True, help="folder to write the model to")
    p.add_argument("--round", type=_round, default="final", dest="choice", metavar="best|final|N",
                   help="best (highest server accuracy), final (default) or a round number "
                   "N (round_<N>_trainable.safetensors)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``fedpeft-export``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        info = export_run(args.run_dir, args.out, args.choice)
    except (FileNotFoundError, ValueError, WeightsError) as exc:
        log.error("%s", exc)
        return 2
    print(f"exported {info.timm_name} + {info.method} (round {info.round}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
