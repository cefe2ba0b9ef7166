"""A sweep file: a base preset, methods, seeds and settings, each setting a run-config string.

Read by :func:`load_sweep` into a :class:`Sweep` of :class:`Run` s; the runner
(:mod:`fedpeft.tools.sweep`) and the report (:mod:`fedpeft.tools.report`) both take it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import tomllib


@dataclass(frozen=True)
class Run:
    """One run of the sweep."""

    name: str
    setting: str
    method: str
    seed: int
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file."""

    runs: tuple[Run, ...]
    num_supernodes: int
    results: Path
    report: Path
    target_accuracy: float
    name: str = ""


SWEEP_KEYS = {"name", "base", "methods", "seeds", "num-supernodes", "results", "report",
              "target-accuracy"}  # fmt: skip


def _check_keys(path: Path, table: str, values: dict, known: set[str], hint: str = "") -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: {table} has unknown keys {unknown}; known: {sorted(known)}"
                         f"{hint}")  # fmt: skip


def load_sweep(path: Path) -> Sweep:
    """Parse a sweep file; paths in it are relative to the current directory."""
    with path.open("rb") as f:
        raw = tomllib.load(f)
    top, settings = raw.get("sweep", {}), raw.get("settings", {})
    if not settings:
        raise ValueError(f"{path}: no [settings.<name>] tables")
    _check_keys(path, "[sweep]", top, SWEEP_KEYS)
    sweep_name = top.get("name", "")
    if not isinstance(sweep_name, str) or not re.fullmatch(r"[a-z0-9-]*", sweep_name):
        raise ValueError(f"{path}: [sweep] name {sweep_name!r} must be lowercase letters, "
                         "digits and '-'")  # fmt: skip
    for name, spec in settings.items():
        hint = f' (a dot in a setting name needs quotes: [settings."{name}.…"])'
        _check_keys(path, f"[settings.{name}]", spec, {"run-config"}, hint)
        if not isinstance(spec.get("run-config", ""), str):
            raise ValueError(f"{path}: [settings.{name}] run-config must be a string")
    runs = []
    for seed in top.get("seeds", [42]):  # seed-major: a partial sweep covers every cell once
        for setting, spec in settings.items():
            for method in top.get("methods", []):
                overrides = (top.get("base", ""), spec.get("run-config", ""),
                             f"peft.method='{method}' seed={seed}")  # fmt: skip
                runs.append(Run(f"{setting}-{method}-s{seed}", setting, method, seed,
                                tuple(o for o in overrides if o)))  # fmt: skip
    return Sweep(tuple(runs), int(top.get("num-supernodes", 10)),
                 Path(top.get("results", "docs/results")), Path(top.get("report", "docs")),
                 float(top.get("target-accuracy", 0.0)), sweep_name)  # fmt: skip
