"""Write a backbone weights file for devices: ``python -m fedpeft.tools.deploy.weights OUT``.

Devices have no hub access, so each SuperNode reads its backbone from a local
file (node-config ``weights-path``). This writes the bundled ViT-S/14
(``model.weights='offline'``, converted once and cached) as timm-keyed
safetensors, i.e. the very weights the ServerApp builds its reference model from.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from ... import offline_vit

log = logging.getLogger(__name__)


def export_offline_backbone(out: Path) -> Path:
    """Copy the converted offline ViT-S/14 (converting it first if needed) to ``out``."""
    offline_vit.load_state_dict()  # converts and caches on first use
    cached = offline_vit.cache_dir() / offline_vit.CACHE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m fedpeft.tools.deploy.weights", description=__doc__)
    p.add_argument("out", type=Path, help="e.g. weights/backbone.safetensors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = export_offline_backbone(args.out)
    sys.stdout.write(f"wrote {path} ({path.stat().st_size:,} bytes)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
