"""Every conf/*.toml preset parses against the pyproject defaults."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import tomllib
from flwr.common.config import flatten_dict

from fedpeft.config import app_config, merge_overrides, parse_run_config
from fedpeft.tools.sweep import load_sweep, resolved_config

CONF = Path(__file__).resolve().parents[1] / "conf"
PRESETS = sorted(p for p in CONF.glob("*.toml") if not p.stem.startswith("sweep-"))
SWEEPS = sorted(CONF.glob("sweep-*.toml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_parses(preset, pyproject_config):
    with preset.open("rb") as f:
        overrides = tomllib.load(f)
    merged = {**flatten_dict(pyproject_config), **flatten_dict(overrides)}
    cfg = parse_run_config(merged)
    assert cfg.peft.method


def test_paper_presets_use_paper_settings():
    with (PRESETS[0].parent / "paper-cifar100.toml").open("rb") as f:
        cfg = parse_run_config(flatten_dict(tomllib.load(f)))
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.server.num_rounds) == (64, 10, 50)
    assert cfg.model.img_size == 224 and cfg.model.weights == "hub"


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_run_of_every_sweep_parses(sweep_file, pyproject_config, monkeypatch):
    # Prepare: sweep files name presets relative to the repository root
    monkeypatch.chdir(CONF.parent)
    sweep = load_sweep(sweep_file)
    # Execute / Assert: each run's merged run config is valid, as flwr run would get it,
    # and what the sweep compares finished runs against is that config
    for run in sweep.runs:
        cfg = parse_run_config(
            {**flatten_dict(pyproject_config), **merge_overrides(list(run.overrides))}
        )
        assert (cfg.peft.method, cfg.seed) == (run.method, run.seed)
        expected = json.loads(json.dumps({**dataclasses.asdict(cfg), "output": None}))
        del expected["output"]
        assert resolved_config(run) == expected
    assert len({r.name for r in sweep.runs}) == len(sweep.runs)


def test_cpu_sweep_settings_are_what_their_names_say(monkeypatch):
    # Prepare
    monkeypatch.chdir(CONF.parent)
    sweep = load_sweep(CONF / "sweep-cpu.toml")
    # Execute
    cfgs = {run.setting: parse_run_config(app_config(CONF.parent, list(run.overrides)))
            for run in sweep.runs}  # fmt: skip
    # Assert
    assert sorted(cfgs) == ["dirichlet-0.1", "dp-eps5", "iid", "low-participation"]
    assert (
        cfgs["dirichlet-0.1"].data.partitioner,
        cfgs["dirichlet-0.1"].data.dirichlet__alpha,
    ) == (
        "dirichlet",
        0.1,
    )
    assert cfgs["low-participation"].server.clients_per_round == 1
    assert (cfgs["dp-eps5"].dp.mode, cfgs["dp-eps5"].dp.epsilon) == ("local", 5.0)
    assert {c.data.partitioner for s, c in cfgs.items() if s != "dirichlet-0.1"} == {"iid"}
