"""The linear-probe baseline (benchmarks/linear_probe.py) on the tiny digits setup."""

from __future__ import annotations

import pytest

from benchmarks.linear_probe import run
from benchmarks.plain_loop import app_config
from tests.e2e.helpers import TINY


def test_probe_scores_the_frozen_features_on_the_apps_test_split():
    # Prepare: offline ViT-S/14 at 28 px on scikit-learn digits, head only
    cfg = app_config([TINY, "peft.method='head' seed=3"])
    # Execute
    result = run(cfg, test_sizes=[0, 100])
    # Assert: the whole test split, then a 100-image subsample of it; measured on
    # 2026-11-25: train 1.000, test 0.953 / 0.930 and 0.950 / 0.920 (chance 0.1)
    full, sub = result["test"]["0"], result["test"]["100"]
    assert (result["train_images"], full["images"], sub["images"]) == (1437, 360, 100)
    assert full["accuracy"] >= 0.9 and sub["accuracy"] >= 0.85
    assert result["C"] in (0.001, 0.01, 0.1, 1.0, 10.0)
    assert result["train_accuracy"] == pytest.approx(1.0, abs=0.05)
