"""What a run may import on a machine that has only some packages (``benchmarks/gpu_check``).

The target is a CUDA machine whose Python holds the packages listed in
``benchmarks/gpu_target_packages.txt``; what else the check imports travels as the wheels
of ``benchmarks/gpu_wheels.txt``. On any other machine (CI) :func:`block` makes the rest
unimportable, so a run that would need a package the target lacks fails here too, and
:func:`imported_packages` says where each imported distribution comes from.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import re
import sys
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("benchmarks.gpu_check")

ROOT = Path(__file__).resolve().parents[1]
TARGET_PACKAGES = ROOT / "benchmarks" / "gpu_target_packages.txt"
WHEELS = ROOT / "benchmarks" / "gpu_wheels.txt"
# Never importable, whatever is installed: Ray's wheel (~78 MB) is too large to carry, and
# the check runs the federation in one process (fedpeft.tools.inprocess).
NEVER = ("ray",)
# This checkout's own packages, never blocked.
OWN = ("fedpeft", "server_app", "client_app", "peft_strategies", "benchmarks", "tests")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def package_list(path: Path) -> list[str]:
    """Distribution names of a list file: the first word of each line, ``#`` comments out."""
    names = (line.split("#", 1)[0].split() for line in path.read_text().splitlines())
    return [words[0] for words in names if words]


def block(modules: Iterable[str]) -> list[str]:
    """Make importing each of ``modules`` (top-level names) fail as if it were absent.

    A module imported already (by the interpreter's start-up) stays, with a warning.
    """
    blocked = []
    for name in modules:
        if sys.modules.get(name) is not None:
            log.warning("%s was imported before it could be blocked", name)
            continue
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
        blocked.append(name)
    return sorted(blocked)


def absent_on_target() -> list[str]:
    """Top-level modules installed here whose distributions the target lacks and no wheel brings."""
    allowed = {_norm(n) for n in package_list(TARGET_PACKAGES) + package_list(WHEELS)}
    owners = metadata.packages_distributions()
    return sorted(
        top for top, dists in owners.items()
        if top not in OWN and top.isidentifier() and not top.startswith("__")
        and not {_norm(d) for d in dists} & (allowed | {"fedpeft"})
    )  # fmt: skip


def imported_packages() -> dict:
    """Whether each of :data:`NEVER` stayed unimported, and the distributions of the modules
    imported so far: on the target machine, brought by the wheels, neither (it lacks them).
    """
    owners = metadata.packages_distributions()
    target = {_norm(n) for n in package_list(TARGET_PACKAGES)}
    wheels = {_norm(n) for n in package_list(WHEELS)}
    tops = {m.split(".")[0] for m, mod in list(sys.modules.items()) if mod is not None}
    dists = {_norm(d) for top in tops - set(OWN) for d in owners.get(top, [])}
    return {
        "never_imported": {name: sys.modules.get(name) is None for name in NEVER},
        "on_target": sorted(dists & target),
        "from_wheels": sorted(dists & wheels - target),
        "neither": sorted(dists - target - wheels - {"fedpeft"}),
    }


def unmet_requirements(dists: list[str]) -> dict[str, list[str]]:
    """Per distribution, its installed requirements whose version is outside its pins."""
    from packaging.requirements import Requirement

    out = {}
    for dist in dists:
        unmet = []
        for text in metadata.requires(dist) or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                continue  # not needed on this path (blocked or never imported)
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                unmet.append(f"{req.name} {have} (wants {req.specifier})")
        out[dist] = unmet
    return out
