"""Every conf/*.toml preset parses against the pyproject defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
from flwr.common.config import flatten_dict

from fedpeft.config import parse_run_config

PRESETS = sorted((Path(__file__).resolve().parents[1] / "conf").glob("*.toml"))


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
