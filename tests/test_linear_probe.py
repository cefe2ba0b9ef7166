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


def test_engine_benchmark_measures_both_precisions_and_the_cache_on_cpu():
    # Prepare: the CPU path of what benchmarks/gpu_check.sh runs on a GPU
    from benchmarks.engine import head_round, speed

    over = [TINY, "train.device='cpu'"]
    # Execute
    rows = speed(over, ["lora"], n_train=8, n_eval=8)
    head = head_round(over, n=16, rounds=2)
    # Assert: both precisions timed in one run, their ratio; cached rounds after the first
    (row,) = rows
    assert row["method"] == "lora" and {"fp32", "bf16"} <= set(row)
    assert all(row[p]["train_img_s"] > 0 and row[p]["eval_img_s"] > 0 for p in ("fp32", "bf16"))
    assert row["train_ratio"] == row["bf16"]["train_img_s"] / row["fp32"]["train_img_s"]
    assert len(head["cached"]) == len(head["uncached"]) == 2 and head["later_round_fraction"] > 0


def test_domain_gap_probes_both_weights_on_each_dataset(tmp_path, monkeypatch):
    # Prepare: the probe itself is the one above; here what measure asks of it, recorded
    from benchmarks import domain_gap

    asked = []

    def probe(cfg, test_sizes):
        asked.append((cfg.data.dataset, cfg.model.weights, cfg.seed, cfg.data.elpv__task))
        acc = {"offline": 0.9, "random": 0.6}[cfg.model.weights]
        return {"test": {str(test_sizes[0]): {"accuracy": acc - 0.1 * (cfg.seed - 1)}}}

    monkeypatch.setattr(domain_gap, "run", probe)
    # Execute
    result = domain_gap.measure(["model.img-size=28"], ["fashion-mnist", "elpv"], seeds=[1, 2])
    domain_gap.plot(result, tmp_path / "gap.png")
    # Assert: each dataset × weights × seed probed once, as a head-only run; the gains
    assert sorted(asked) == sorted((d, w, s, "defect") for d in ("fashion-mnist", "elpv")
                                   for w in ("offline", "random") for s in (1, 2))  # fmt: skip
    row = result["datasets"]["elpv"]
    assert row["gain"] == [pytest.approx(0.3), pytest.approx(0.3)]
    assert row["gain_of_headroom"] == [pytest.approx(0.3 / 0.4), pytest.approx(0.3 / 0.5)]
    assert row["mean"]["pretrained"] == pytest.approx(0.85)
    assert (tmp_path / "gap.png").stat().st_size > 0
