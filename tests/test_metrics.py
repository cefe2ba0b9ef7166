"""Balanced accuracy and ROC AUC (fedpeft.metrics): golden values, what evaluate() reports,
and the report's columns for them."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from fedpeft import metrics
from fedpeft.data import load_test
from fedpeft.model import build_model
from fedpeft.tools.report import _table
from fedpeft.training import evaluate
from tests.conftest import ROOT
from tests.runs import tiny_config


def _binary(p1: list[float]) -> np.ndarray:
    p = np.asarray(p1)
    return np.stack([1 - p, p], axis=1)


def test_binary_golden_values():
    # Prepare: scikit-learn's own roc_auc_score example (AUC 0.75); argmax predicts
    # [0, 0, 0, 1]: recall 1.0 for class 0, 0.5 for class 1
    labels, probs = np.array([0, 0, 1, 1]), _binary([0.1, 0.4, 0.35, 0.8])
    # Execute / Assert
    assert metrics.auc(labels, probs) == pytest.approx(0.75)
    assert metrics.balanced_accuracy(labels, probs) == pytest.approx(0.75)


def test_a_one_class_predictor_is_at_half_whatever_the_class_shares():
    # Prepare: 31 % positives (ELPV's defect share) and the same scores for every image
    labels = np.array([1] * 31 + [0] * 69)
    probs = _binary([0.7] * 100)  # everything "defective": accuracy 0.31
    # Execute / Assert: balanced accuracy 0.5 (not 0.31), AUC 0.5 (ties)
    assert metrics.balanced_accuracy(labels, probs) == pytest.approx(0.5)
    assert metrics.auc(labels, probs) == pytest.approx(0.5)


def test_more_classes_average_one_vs_rest_over_the_classes_present():
    # Prepare: 3 classes, class 1 absent from the labels
    labels = np.array([0, 0, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.3, 0.4], [0.5, 0.1, 0.4], [0.1, 0.2, 0.7]])
    # class 0 vs rest: scores 0.8, 0.3 (pos) vs 0.5, 0.1 → 3 of 4 pairs; class 2 vs rest:
    # 0.4, 0.7 (pos) vs 0.1, 0.4 → 1 + 0.5 tie + 1 + 1 = 3.5 of 4
    # Execute / Assert
    assert metrics.auc(labels, probs) == pytest.approx((0.75 + 0.875) / 2)
    # argmax [0, 2, 0, 2] against [0, 0, 2, 2]: recall 0.5 for each class present
    assert metrics.balanced_accuracy(labels, probs) == pytest.approx(0.5)


def test_log_odds_are_the_probabilities_log_odds_and_keep_ranking_where_they_saturate():
    # Prepare: moderate logits (reference: float64 softmax), and two images whose class-1
    # probability is 1.0 in float32 (logit gaps 40 and 50)
    logits = torch.tensor([[0.5, -1.0, 2.0], [3.0, 3.0, -2.0], [-4.0, 1.0, 0.0]])
    p = logits.double().softmax(1)
    saturated = torch.tensor([[0.0, 40.0], [0.0, 50.0]])
    # Execute
    odds = metrics.ovr_log_odds(logits)
    top = metrics.ovr_log_odds(saturated)
    # Assert
    assert torch.allclose(odds.double(), torch.log(p / (1 - p)), atol=1e-5)
    assert saturated.softmax(1)[:, 1].tolist() == [1.0, 1.0]  # ties, as probabilities
    assert top[:, 1].tolist() == [40.0, 50.0] and top[:, 0].tolist() == [-40.0, -50.0]
    assert metrics.auc(np.array([0, 1]), top.numpy()) == 1.0


@pytest.mark.parametrize("labels, probs", [
    (np.array([1, 1]), _binary([0.2, 0.9])),  # one class: no AUC
    (np.array([0, 1]), _binary([math.nan, 0.9])),  # a diverged model
])  # fmt: skip
def test_undefined_auc_is_nan(labels, probs):
    # Execute / Assert
    assert math.isnan(metrics.auc(labels, probs))


def test_evaluate_reports_them_for_a_model_that_predicts_one_class():
    # Prepare: timm's test_vit on 100 sklearn digits (10 classes) with a head that always
    # says class 3
    cfg = tiny_config("head", **{"data.source": "builtin", "data.dataset": "digits",
                                 "data.test-size": 100})  # fmt: skip
    test = load_test(cfg.data, cfg.seed, cfg.model.img_size)
    model = build_model(cfg.model, cfg.peft, test.num_classes, cfg.seed)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[3] = 5.0
    # Execute
    outcome = evaluate(model, test, batch_size=32, scores=True)
    plain = evaluate(model, test, batch_size=32)  # a client's evaluation: no scores
    # Assert: accuracy is class 3's share; balanced accuracy 1 / classes present; AUC 0.5
    present = torch.unique(test.labels)
    assert outcome.accuracy == pytest.approx(float((test.labels == 3).float().mean()))
    assert outcome.balanced_accuracy == pytest.approx(1 / len(present))
    assert outcome.auc == pytest.approx(0.5)
    assert (plain.accuracy, plain.loss) == (outcome.accuracy, outcome.loss)
    assert math.isnan(plain.balanced_accuracy) and math.isnan(plain.auc)


def _row(method: str, seed: int, acc: float, auc: float | None) -> dict:
    return {"setting": "iid", "method": method, "seed": seed, "final_accuracy": acc,
            "best_accuracy": acc, "trainable_params": 10, "bytes_per_transfer": 40,
            "total_bytes": 400, "epsilon": None, "final_balanced_accuracy": auc,
            "final_auc": auc, "client_accuracy": None}  # fmt: skip


def test_the_report_shows_them_where_recorded_and_says_how_many_runs_did():
    # Prepare: lora's three seeds all recorded them; head's seed 1 ran before they existed
    rows = [_row("lora", s, 0.8, 0.7 + s / 100) for s in (1, 2, 3)]
    rows += [_row("head", 1, 0.6, None), _row("head", 2, 0.6, 0.5), _row("head", 3, 0.6, 0.7)]
    # Execute
    table = _table(rows).splitlines()
    # Assert
    assert "final balanced acc | final AUC |" in table[0]
    head, lora = table[2], table[3]
    assert "| 0.600 ± 0.141 (2 of 3) | 0.600 ± 0.141 (2 of 3) |" in head
    assert "| 0.720 ± 0.010 | 0.720 ± 0.010 |" in lora
    assert "final AUC" not in _table([_row("lora", 1, 0.8, None)])


def test_a_clientapp_process_does_not_import_scikit_learn():
    # Prepare: importing sklearn.metrics takes seconds (4.7 s measured beside a sweep), and
    # before fedpeft.metrics neither app imported scikit-learn; only the server scores
    code = "import sys, client_app.app; print('sklearn' in sys.modules)"
    # Execute
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)  # fmt: skip
    # Assert
    assert out.stdout.strip() == "False"
